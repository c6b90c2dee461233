"""The applications of the e2e's pods and the Prometheus that scrapes them: a synthetic camera
(examples/rtsp_camera.py: GStreamer's RTSP server, live H.264), players (ffprobe, GStreamer
rtspsrc), a scripted RTSP client whose socket lives in a pod's namespace, and Prometheus.

Every process runs in its own process group (stopped with the group: SIGTERM, then SIGKILL) and is
registered with a Reaper so that nothing outlives the driver. The camera, the player command
lines and the RTSP client are test/integration/rtsp_peers.py's (on test/integration's sys.path,
which netns.py sets up), run inside a pod.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import netns
import harness as H  # noqa: E402  (test/integration, on sys.path through netns)
import rtsp_peers as R  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from agent.agent import http_request  # noqa: E402  (istio-integration/agent)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CAMERA = os.path.join(REPO, "examples", "rtsp_camera.py")
PYTHON = "/usr/bin/python3"


class Reaper:
    """Every process started, stopped on cleanup (reverse order)."""

    def __init__(self):
        self.procs = []
        self.lock = threading.Lock()

    def popen(self, argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        with self.lock:
            self.procs.append(p)
        return p

    @staticmethod
    def stop(p, timeout=5.0, sig=signal.SIGTERM):
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of the group (children of ip netns exec, gst threads...).
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if p.poll() is None:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def stop_all(self):
        with self.lock:
            procs = list(reversed(self.procs))
            self.procs = []
        for p in procs:
            self.stop(p, timeout=3)


class Camera(R.Camera):
    """rtsp_camera.py listening on 0.0.0.0:<port> inside pod <pod>; status file gives its live
    RTSP sessions and connection counts."""

    def __init__(self, reaper, pod, workdir, port=8554, paths=("/cam",)):
        self.pod = pod
        try:
            super().__init__(workdir, port, paths, extra=("--address", "0.0.0.0"),
                             prefix=pod.argv(), tag=pod.name, spawn=reaper.popen,
                             ready_timeout=20)
        except AssertionError as e:
            raise RuntimeError("in %s: %s" % (pod.name, e)) from None

    def sessions(self):
        return super().sessions() or 0


def ffprobe(pod, url, transport, seconds=2.0, timeout=30):
    """ffprobe in <pod> decoding <seconds> of video: (frames, stderr)."""
    cmd = pod.argv() + R.ffprobe_argv(url, transport, seconds)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, start_new_session=True)
    except subprocess.TimeoutExpired as e:
        return 0, "timeout after %ss: %s" % (timeout, e.stderr)
    return R.frames_of(r.stdout), r.stderr.strip()


def ffprobe_popen(reaper, pod, url, transport, seconds):
    cmd = pod.argv() + R.ffprobe_argv(url, transport, seconds)
    return reaper.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def gst_frames(pod, url, protocol, frames=25, timeout=30):
    """GStreamer rtspsrc in <pod> decoding <frames> H.264 frames (decoded by avdec_h264):
    (ok, output). protocol: udp | tcp."""
    cmd = pod.argv() + R.gst_argv(url, protocol, frames)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, start_new_session=True)
        return r.returncode == 0, (r.stdout + r.stderr).strip()
    except subprocess.TimeoutExpired as e:
        return False, "timeout after %ss: %s" % (timeout, e.stderr)


class RtspClient(R.RawRtsp):
    """A scripted RTSP client whose socket lives in pod <pod>'s namespace (so it is captured by
    the pod's iptables like an application's). play_tcp() starts a reader thread that counts
    interleaved RTP packets and records the longest gap between them."""

    def __init__(self, pod, host, port, timeout=10.0):
        self.pod = pod
        sock = netns.in_ns(pod.ns, socket.create_connection, (host, port), timeout)
        super().__init__(port, timeout, sock=sock)
        self.packets = 0
        self.last_packet = None
        self.max_gap = 0.0
        self.gap_since = None  # when to start measuring gaps
        self.closed_at = None
        self.error = None
        self._reader = None
        self._stop = threading.Event()
        self.lock = threading.Lock()

    def close(self):
        self._stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        super().close()
        if self._reader:
            self._reader.join(timeout=5)

    def on_frame(self):
        super().on_frame()
        self._count_packet()

    def _count_packet(self):
        now = time.monotonic()
        with self.lock:
            if self.last_packet is not None and (self.gap_since is None or now >= self.gap_since):
                self.max_gap = max(self.max_gap, now - self.last_packet)
            self.last_packet = now
            self.packets += 1

    def request(self, method, url, headers=None):
        h = {"User-Agent": "msm-e2e"}
        h.update(headers or {})
        return super().request(method, url, h)

    def play_tcp(self, url):
        """DESCRIBE, SETUP of the first track interleaved, PLAY; then read in the background."""
        st, hd, sdp = self.request("DESCRIBE", url, {"Accept": "application/sdp"})
        if st != 200:
            raise RuntimeError("DESCRIBE %s: %d" % (url, st))
        base = hd.get("content-base", url).rstrip("/")
        m = re.search(r"a=control:(\S+)", sdp.split("m=", 1)[1]) if "m=" in sdp else None
        ctl = m.group(1) if m else "stream=0"
        track = ctl if ctl.startswith("rtsp://") else base + "/" + ctl
        st, hd, _ = self.request("SETUP", track, {"Transport": "RTP/AVP/TCP;unicast;interleaved=0-1"})
        if st != 200:
            raise RuntimeError("SETUP %s: %d %s" % (track, st, hd))
        # The aggregate control URL is the Content-Base (a=control:*), as players use it.
        st, hd, _ = self.request("PLAY", base, {"Range": "npt=0.000-"})
        if st != 200:
            raise RuntimeError("PLAY %s: %d" % (url, st))
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

    def _read_loop(self):
        self.sock.settimeout(1.0)
        try:
            while not self._stop.is_set():
                try:
                    self._fill()
                except socket.timeout:
                    continue
                while self.buf:
                    if self.buf[:1] == b"$":
                        if len(self.buf) < 4:
                            break
                        n = int.from_bytes(self.buf[2:4], "big")
                        if len(self.buf) < 4 + n:
                            break
                        self.buf = self.buf[4 + n:]
                        self._count_packet()
                    else:
                        i = self.buf.find(b"\r\n\r\n")
                        if i < 0:
                            break
                        self.buf = self.buf[i + 4:]  # a response (keep-alive): skip
        except (EOFError, OSError) as e:
            if not self._stop.is_set():
                self.error = str(e)
                self.closed_at = time.monotonic()

    def keepalive(self, url):
        """A GET_PARAMETER on the playing session (written only: the reader skips the answer)."""
        self.cseq += 1
        msg = "GET_PARAMETER %s RTSP/1.0\r\nCSeq: %d\r\nSession: %s\r\n\r\n" % (
            url, self.cseq, self.session)
        self.sock.sendall(msg.encode())

    def snapshot(self):
        with self.lock:
            return self.packets, self.last_packet, self.max_gap

    def measure_gaps_from_now(self):
        with self.lock:
            self.max_gap = 0.0
            self.gap_since = time.monotonic()


def describe_once(pod, host, port, url, timeout=10.0):
    """One connection, one DESCRIBE: (status, error text). status 0 = no answer (closed/reset)."""
    try:
        c = RtspClient(pod, host, port, timeout)
    except OSError as e:
        return 0, "connect: %s" % e
    try:
        st, _, _ = c.request("DESCRIBE", url, {"Accept": "application/sdp"})
        return st, ""
    except (EOFError, OSError, ValueError, IndexError) as e:
        return 0, "%s: %s" % (type(e).__name__, e)
    finally:
        c.close()


def http_get(ns, host, port, path, method="GET", timeout=5.0):
    """HTTP request from inside namespace <ns> (the agent's client): (status, body text)."""
    def connect(h, p, t):
        return netns.in_ns(ns, socket.create_connection, (h, p), t)
    status, body = http_request(connect, host, port, path, method, timeout=timeout)
    return status, body.decode("utf-8", "replace")


class Prometheus:
    """Debian's prometheus in namespace <ns>, scraping /stats/prometheus of <targets> every
    second; query() goes through its HTTP API."""

    def __init__(self, reaper, ns, listen_ip, workdir, targets, port=9090):
        self.ns = ns
        self.ip = listen_ip
        self.port = port
        d = os.path.join(workdir, "prometheus")
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "prometheus.yml")
        lines = ["global:", "  scrape_interval: 1s", "  evaluation_interval: 1s",
                 "scrape_configs:", "- job_name: envoy-stats", "  metrics_path: /stats/prometheus",
                 "  static_configs:"]
        for pod, addr in targets:
            lines += ["  - targets: ['%s']" % addr, "    labels: {pod: '%s'}" % pod]
        with open(conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log = os.path.join(d, "log")
        self._log = open(self.log, "wb")
        self.proc = reaper.popen(
            netns.ns_argv(ns) + ["prometheus", "--config.file=" + conf,
                                 "--storage.tsdb.path=" + os.path.join(d, "data"),
                                 "--web.listen-address=%s:%d" % (listen_ip, port),
                                 "--log.level=warn"],
            stdout=self._log, stderr=self._log)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("prometheus exited: %s" % open(self.log).read()[-2000:])
            try:
                if self.get("/-/ready")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError("prometheus not ready in 40 s: %s" % open(self.log).read()[-2000:])

    def get(self, path):
        return http_get(self.ns, self.ip, self.port, path)

    def query(self, expr):
        st, body = self.get("/api/v1/query?query=" + urllib.parse.quote(expr))
        d = json.loads(body) if body else {}
        if st != 200 or d.get("status") != "success":
            raise RuntimeError("query failed (%d): %s: %s" % (st, expr, body[:300]))
        return d["data"]["result"]

    def targets(self):
        st, body = self.get("/api/v1/targets")
        return json.loads(body)["data"]["activeTargets"]


def sanitizer_env():
    """For an ASan/UBSan build of the proxy (ignored by a normal build): the integration
    harness's settings (report and stop on the first error, leaks checked at exit)."""
    return dict(H.SANITIZER_ENV)
