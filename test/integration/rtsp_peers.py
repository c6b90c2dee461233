"""Real RTSP peers for the RTSP proxy's integration tests (test_rtsp*.py).

- Camera: examples/rtsp_camera.py (GStreamer's RTSP server through python3-gi) on a free port,
  with its live session count read from a status file.
- Players: ffprobe (decodes and counts frames, transport forced) and GStreamer's rtspsrc.
- RawRtsp: a scripted RTSP client on a socket, for error paths and precise state checks.
Also the base of istio-integration/e2e/peers.py (the same peers inside network namespaces).
- rtsp_proxy_config(): a static bootstrap with rtsp_proxy (before tcp_proxy, or alone).
Every process started here is stopped in a cleanup; every wait is bounded.
"""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time

import harness as H

HERE = os.path.dirname(os.path.abspath(__file__))
CAMERA = os.path.join(HERE, "..", "..", "examples", "rtsp_camera.py")
RTSP_TYPE = "type.googleapis.com/msm.extensions.filters.network.rtsp_proxy.v1.RtspProxy"


def missing_peers():
    """What is missing to run real-peer tests ('' when all is there)."""
    miss = [t for t in ("ffprobe", "ffmpeg", "gst-launch-1.0") if not shutil.which(t)]
    r = subprocess.run(["/usr/bin/python3", "-c",
                        "import gi; gi.require_version('GstRtspServer', '1.0');"
                        "from gi.repository import GstRtspServer"], capture_output=True)
    if r.returncode:
        miss.append("gir1.2-gst-rtsp-server-1.0")
    return " ".join(miss)


class Camera:
    """examples/rtsp_camera.py, started with <spawn> (default: a child that dies with this
    process) behind argv <prefix> (e.g. `ip netns exec <pod>`); status and log files named by
    <tag>. Raises AssertionError (after stopping it) if it is not READY in <ready_timeout> s."""

    def __init__(self, workdir, port=0, paths=("/cam",), extra=(), prefix=(), tag=None,
                 spawn=None, ready_timeout=15):
        tag = tag or "%d" % id(self)
        self.status = os.path.join(workdir, "camera-%s.json" % tag)
        self.log = os.path.join(workdir, "camera-%s.log" % tag)
        args = list(prefix) + ["/usr/bin/python3", CAMERA, "--port", str(port),
                               "--status", self.status]
        for p in paths:
            args += ["--path", p]
        args += list(extra)
        self._log = open(self.log, "w")
        spawn = spawn or _popen_child
        self.proc = spawn(args, stdout=subprocess.PIPE, stderr=self._log,
                          stdin=subprocess.DEVNULL, text=True)
        line = ""
        deadline = time.monotonic() + ready_timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line.startswith("READY") or not line:
                break
        if not line.startswith("READY"):
            self.stop()
            raise AssertionError("camera %s did not start: %r\n%s" % (tag, line,
                                                                     self.read_log()))
        self.port = int(line.split()[1])

    def read_log(self):
        with open(self.log) as f:
            return f.read()

    def state(self):
        try:
            with open(self.status) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def sessions(self):
        return self.state().get("sessions")

    def connected_total(self):
        return self.state().get("connected_total", 0)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()


def _popen_child(argv, **kw):
    return subprocess.Popen(argv, preexec_fn=H._die_with_parent, **kw)


def ffprobe_argv(u, transport, seconds):
    """ffprobe decoding <seconds> of video through <u> with the transport forced; prints the
    number of frames read."""
    return ["ffprobe", "-v", "error", "-rtsp_transport", transport, "-count_frames",
            "-select_streams", "v:0", "-show_entries", "stream=nb_read_frames",
            "-of", "csv=p=0", "-read_intervals", "%%+%g" % seconds, u]


def frames_of(ffprobe_out):
    m = re.search(r"(\d+)", ffprobe_out)
    return int(m.group(1)) if m else 0


def gst_argv(u, protocol, frames):
    """GStreamer rtspsrc decoding <frames> H.264 frames of <u> (protocol: udp | tcp)."""
    return ["gst-launch-1.0", "-q", "rtspsrc", "location=" + u, "protocols=" + protocol,
            "latency=100", "!", "rtph264depay", "!", "avdec_h264", "!", "identity",
            "eos-after=%d" % frames, "!", "fakesink"]


def rtsp_filter(**cfg):
    c = {"@type": RTSP_TYPE}
    c.update(cfg)
    return {"name": "msm.filters.network.rtsp_proxy", "typed_config": c}


def rtsp_proxy_config(camera_port, port=None, with_tcp_proxy=True, clusters=None, **rtsp):
    """A bootstrap: listener 'main' with rtsp_proxy (then tcp_proxy to cluster 'camera' unless
    <with_tcp_proxy> is False), cluster 'camera' -> 127.0.0.1:<camera_port>."""
    port = port or H.free_port()
    filters = [rtsp_filter(**rtsp)]
    if with_tcp_proxy:
        filters.append(H.tcp_proxy_filter("cam", "camera"))
    cl = [H.cluster("camera", [H.sock_addr(camera_port)], connect_timeout="1s")]
    cl += clusters or []
    return H.bootstrap(listeners=[H.listener("main", H.sock_addr(port), filters)], clusters=cl)


def url(proxy, path="/cam", name="main"):
    return "rtsp://127.0.0.1:%d%s" % (proxy.listener_port(name), path)


class Player:
    """ffprobe decoding <seconds> of video through <u> with the transport forced."""

    def __init__(self, u, transport, seconds=2.0, timeout=20):
        self.cmd = ffprobe_argv(u, transport, seconds)
        self.timeout = timeout
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True,
                                     preexec_fn=H._die_with_parent)
        self.out = self.err = ""

    def wait(self):
        try:
            self.out, self.err = self.proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.out, self.err = self.proc.communicate()
        return self

    def frames(self):
        return frames_of(self.out)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def ffprobe_frames(u, transport, seconds=2.0):
    p = Player(u, transport, seconds).wait()
    return p.frames(), p.err


def gst_frames_ok(u, protocol, frames=15, timeout=20):
    """GStreamer rtspsrc decoding <frames> H.264 frames: (ok, output)."""
    cmd = gst_argv(u, protocol, frames)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, preexec_fn=H._die_with_parent)
        return r.returncode == 0, r.stdout + r.stderr
    except subprocess.TimeoutExpired as e:
        return False, "timeout: %s" % e


def proxy_fds(proxy):
    """Open fds of the proxy process, and how many of them are UDP sockets (by inode)."""
    pid = proxy.proc.pid
    fds = os.listdir("/proc/%d/fd" % pid)
    inodes = set()
    for fd in fds:
        try:
            t = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", t)
        if m:
            inodes.add(m.group(1))
    udp = 0
    for tab in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(tab) as f:
                next(f)
                for line in f:
                    if line.split()[9] in inodes:
                        udp += 1
        except OSError:
            pass
    return len(fds), udp


class RawRtsp:
    """A scripted RTSP client: request() sends one request and returns (status, headers, body);
    interleaved frames that arrive meanwhile are counted (on_frame()) and skipped. <sock>: an
    already connected socket to use instead of connecting to 127.0.0.1:<port>."""

    def __init__(self, port, timeout=H.IO_TIMEOUT, rcvbuf=None, sock=None):
        if sock is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if rcvbuf:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            sock.settimeout(timeout)
            sock.connect(("127.0.0.1", port))
        else:
            sock.settimeout(timeout)
        self.sock = sock
        self.buf = b""
        self.cseq = 0
        self.frames = 0
        self.session = None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send_raw(self, data):
        self.sock.sendall(data)

    def _fill(self):
        b = self.sock.recv(65536)
        if not b:
            raise EOFError("connection closed")
        self.buf += b

    def on_frame(self):
        self.frames += 1

    def read_response(self):
        while True:
            while self.buf[:1] == b"$":
                while len(self.buf) < 4:
                    self._fill()
                n = int.from_bytes(self.buf[2:4], "big")
                while len(self.buf) < 4 + n:
                    self._fill()
                self.buf = self.buf[4 + n:]
                self.on_frame()
            i = self.buf.find(b"\r\n\r\n")
            if i >= 0 and self.buf[:1] != b"$":
                break
            self._fill()
        head = self.buf[:i].decode("latin-1")
        self.buf = self.buf[i + 4:]
        lines = head.split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for l in lines[1:]:
            k, _, v = l.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, hdrs, body.decode("latin-1")

    def request(self, method, u, headers=None, body=b"", version="1.0"):
        self.cseq += 1
        h = {"CSeq": str(self.cseq)}
        if self.session:
            h["Session"] = self.session
        h.update(headers or {})
        lines = ["%s %s RTSP/%s" % (method, u, version)] + ["%s: %s" % kv for kv in h.items()]
        if body:
            lines.append("Content-Length: %d" % len(body))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        st, hd, bd = self.read_response()
        if "session" in hd:
            self.session = hd["session"].split(";")[0]
        return st, hd, bd

    def closed(self, timeout=H.IO_TIMEOUT):
        return H.is_closed(self.sock, timeout)

    def play_udp(self, u, rtp_port):
        """DESCRIBE, SETUP (UDP client_port=rtp_port-rtp_port+1), PLAY: returns the SETUP
        Transport header."""
        st, _, _ = self.request("DESCRIBE", u, {"Accept": "application/sdp"})
        assert st == 200, st
        st, hd, _ = self.request("SETUP", u + "/stream=0",
                                 {"Transport": "RTP/AVP;unicast;client_port=%d-%d"
                                  % (rtp_port, rtp_port + 1)})
        assert st == 200, (st, hd)
        tr = hd["transport"]
        st, _, _ = self.request("PLAY", u)
        assert st == 200, st
        return tr
