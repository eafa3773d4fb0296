"""``unclip serve``: the web app (``unclip.web``) on a model folder, in the browser."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from unclip.cli.generate import BUNDLED, add_pipeline_options

    p = subparsers.add_parser(
        "serve",
        help="a web page for text-to-image, variations, interpolations, text diffs and probing",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", help=f"model folder (pipeline.json or a diffusers unCLIP folder); default: {BUNDLED}")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every network, no login)")
    p.add_argument("--port", type=int, default=7860, help="port (0: any free one)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    add_pipeline_options(p)
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from unclip.cli.generate import load_pipeline
    from unclip.web.server import App, make_server

    args.decoder_steps = None
    loaded = load_pipeline(args)  # here, so that a bad folder or setting is an error before the server starts
    app = App(lambda: loaded)
    server = make_server(app, args.host, args.port)
    host, port = server.server_address[:2]
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}: anyone who can reach it can run the model (there is no login)")
    print(f"unclip serving {loaded[1]} at http://{'localhost' if host == '127.0.0.1' else host}:{port}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped")
    finally:
        server.server_close()
    return 0
