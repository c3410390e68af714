#!/usr/bin/python3
"""A stand-in IP camera for the RTSP pull tests: GStreamer's RTSP server library
(Debian: gir1.2-gst-rtsp-server-1.0, python3-gi) serving a live H.264 test pattern at
rtsp://127.0.0.1:PORT/live, optionally behind Basic/Digest authentication.

    rtsp_camera.py PORT [USER PASSWORD [digest|basic]]

Runs with the system Python (GObject introspection is not in the test venv); prints
"ready" once it listens and serves until killed."""
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

Gst.init(None)
port = sys.argv[1]
server = GstRtspServer.RTSPServer()
server.set_address("127.0.0.1")
server.set_service(port)
factory = GstRtspServer.RTSPMediaFactory()
factory.set_launch(
    "( videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=25/1 "
    "! x264enc tune=zerolatency key-int-max=25 bframes=0 "
    "! rtph264pay name=pay0 pt=96 config-interval=-1 )")
factory.set_shared(True)
if len(sys.argv) >= 4:
    method = sys.argv[4] if len(sys.argv) > 4 else "digest"
    auth = GstRtspServer.RTSPAuth()
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", "camera-user")
    auth.add_basic(GstRtspServer.RTSPAuth.make_basic(sys.argv[2], sys.argv[3]), token)
    auth.add_digest(sys.argv[2], sys.argv[3], token)
    auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC if method == "basic"
                               else GstRtsp.RTSPAuthMethod.DIGEST)
    server.set_auth(auth)
    permissions = GstRtspServer.RTSPPermissions()
    permissions.add_permission_for_role("camera-user", "media.factory.access", True)
    permissions.add_permission_for_role("camera-user", "media.factory.construct", True)
    factory.set_permissions(permissions)
server.get_mount_points().add_factory("/live", factory)
if server.attach(None) == 0:
    print("cannot listen", flush=True)
    sys.exit(1)
print("ready", flush=True)
GLib.MainLoop().run()
