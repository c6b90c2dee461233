#!/usr/bin/python3
"""A synthetic RTSP camera: GStreamer's RTSP server (gst-rtsp-server through python3-gi) serving a
live H.264 test pattern, for the quick start and the integration tests.

    /usr/bin/python3 examples/rtsp_camera.py --port 8554 --path /cam

Prints "READY <port>" once it listens (port 0 picks a free one). With --status FILE it keeps
writing a JSON line there: {"sessions": <RTSP sessions>, "connections": <connected clients>,
"connected_total": <ever connected>}, which is how tests see that the camera serves ONE
session to any number of clients behind the proxy. Needs Debian's packages
gir1.2-gst-rtsp-server-1.0, gstreamer1.0-plugins-{base,good,ugly} (scripts/deps.sh test).
"""
import argparse
import json
import os
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=8554)
    ap.add_argument("--address", default="127.0.0.1")
    ap.add_argument("--path", action="append", help="mount point(s); default /cam")
    ap.add_argument("--bitrate", type=int, default=600, help="kbit/s")
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--keyint", type=int, default=12, help="frames between keyframes")
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--pattern", default="ball", help="videotestsrc pattern (snow: full bitrate)")
    ap.add_argument("--audio", action="store_true", help="add an audio track (PCMU)")
    ap.add_argument("--user", help="require Basic/Digest credentials user:password")
    ap.add_argument("--status", help="file to keep the session count in (JSON)")
    ap.add_argument("--protocols", default="udp,tcp", help="transports the camera accepts")
    a = ap.parse_args()

    Gst.init(None)
    w, h = a.size.split("x")
    video = ("videotestsrc is-live=true pattern=%s ! video/x-raw,width=%s,height=%s,"
             "framerate=%d/1 ! x264enc tune=zerolatency speed-preset=ultrafast "
             "key-int-max=%d bitrate=%d ! rtph264pay name=pay0 pt=96 config-interval=1"
             % (a.pattern, w, h, a.fps, a.keyint, a.bitrate))
    audio = (" audiotestsrc is-live=true wave=sine ! audio/x-raw,rate=8000,channels=1 ! "
             "mulawenc ! rtppcmupay name=pay1 pt=0") if a.audio else ""
    launch = "( %s%s )" % (video, audio)

    server = GstRtspServer.RTSPServer()
    server.set_address(a.address)
    server.set_service(str(a.port))
    mounts = server.get_mount_points()
    lower = GstRtsp.RTSPLowerTrans(0)
    for p in a.protocols.split(","):
        lower |= {"udp": GstRtsp.RTSPLowerTrans.UDP, "tcp": GstRtsp.RTSPLowerTrans.TCP}[p.strip()]
    for path in a.path or ["/cam"]:
        f = GstRtspServer.RTSPMediaFactory()
        f.set_launch(launch)
        f.set_shared(True)
        f.set_protocols(lower)
        mounts.add_factory(path, f)
    if a.user:
        user, pw = a.user.split(":", 1)
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string("media.factory.role", "user")
        basic = GstRtspServer.RTSPAuth.make_basic(user, pw)
        auth.add_basic(basic, token)
        server.set_auth(auth)
        for path in a.path or ["/cam"]:
            f = mounts.match(path)[0]
            perms = GstRtspServer.RTSPPermissions()
            perms.add_role_from_structure(Gst.Structure.new_from_string(
                "user, media.factory.access=(boolean)true, "
                "media.factory.construct=(boolean)true"))
            f.set_permissions(perms)

    state = {"connections": 0, "connected_total": 0}

    def on_client_closed(client):
        state["connections"] -= 1

    def on_client(srv, client):
        state["connections"] += 1
        state["connected_total"] += 1
        client.connect("closed", on_client_closed)

    server.connect("client-connected", on_client)
    if server.attach(None) == 0:
        sys.exit("cannot listen on %s:%d" % (a.address, a.port))
    pool = server.get_session_pool()

    def tick():
        pool.cleanup()
        if a.status:
            tmp = a.status + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"sessions": pool.get_n_sessions(),
                           "connections": state["connections"],
                           "connected_total": state["connected_total"]}, f)
            os.replace(tmp, a.status)
        return True

    tick()
    GLib.timeout_add(100, tick)
    loop = GLib.MainLoop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print("READY %d" % server.get_bound_port(), flush=True)
    loop.run()


if __name__ == "__main__":
    main()
