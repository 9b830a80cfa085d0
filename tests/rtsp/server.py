#!/usr/bin/python3
"""A camera-like RTSP server for Mirror's tests: GStreamer's gst-rtsp-server on loopback.

Run with Debian's /usr/bin/python3 (the interpreter that sees `gi`). Prints `ready` once
it listens, then serves until killed.

    server.py --port 8554 --codec h264 --audio aac --fps 30 --gop 30
"""

import argparse
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def launch_line(args):
    video = (
        f"videotestsrc is-live=true pattern=ball ! "
        f"video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 ! "
        f"timeoverlay ! videoconvert ! "
    )
    if args.codec == "vp8":
        video += "vp8enc deadline=1 ! rtpvp8pay name=pay0 pt=96"
    elif args.codec == "h264":
        video += (
            f"x264enc tune=zerolatency speed-preset=ultrafast bitrate={args.kbps} "
            f"key-int-max={args.gop} bframes=0 ! video/x-h264,profile=high ! "
            f"rtph264pay name=pay0 pt=96 config-interval=-1"
        )
    else:
        video += (
            f"x265enc tune=zerolatency speed-preset=ultrafast bitrate={args.kbps} "
            f"key-int-max={args.gop} "
            f'option-string="keyint={args.gop}:min-keyint={args.gop}:scenecut=0:open-gop=0" ! '
            f"video/x-h265,profile=main ! "
            f"rtph265pay name=pay0 pt=96 config-interval=-1"
        )
    audio = ""
    if args.audio == "aac":
        audio = (
            " audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! "
            "audio/x-raw,rate=48000,channels=2 ! avenc_aac bitrate=128000 ! "
            "rtpmp4gpay name=pay1 pt=97"
        )
    elif args.audio == "pcmu":
        audio = (
            " audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! "
            "audio/x-raw,rate=8000,channels=1 ! mulawenc ! rtppcmupay name=pay1 pt=0"
        )
    return f"( {video}{audio} )"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/cam")
    parser.add_argument("--codec", choices=["h264", "h265", "vp8"], default="h264")
    parser.add_argument("--audio", choices=["aac", "pcmu", "none"], default="aac")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--gop", type=int, default=30)
    parser.add_argument("--kbps", type=int, default=1000)
    parser.add_argument("--user", help="require Basic authentication as this user")
    parser.add_argument("--password", default="")
    args = parser.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(args))
    # One encoder for every client, as a camera has.
    factory.set_shared(True)
    if args.user:
        # Only this user may play the stream, as with a camera's account.
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "viewer")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        server.set_auth(auth)
        permissions = GstRtspServer.RTSPPermissions()
        permissions.add_permission_for_role("viewer", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        permissions.add_permission_for_role("viewer", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        factory.set_permissions(permissions)
    server.get_mount_points().add_factory(args.path, factory)
    if server.attach(None) == 0:
        print(f"cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        sys.exit(1)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
