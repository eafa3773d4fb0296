"""The small web app (DESIGN.md §1): ``unclip serve`` puts text-to-image, the manipulations of §3 and the
probing of §4 in a browser page, on the standard library's HTTP server (``unclip.web.server``)."""
