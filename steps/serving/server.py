"""Running the app: waitress (a production WSGI server) and a warm-up call so the first request is not slow."""

from __future__ import annotations

import io


def serve(app, host: str, port: int, threads: int) -> None:
    """Run `app` under waitress until interrupted."""
    import waitress

    # waitress buffers each body before the app sees it; let Flask (JSON 413) judge sizes up to twice
    # its limit and have waitress refuse anything beyond, so a huge upload is never read to the end.
    waitress.serve(
        app,
        host=host,
        port=port,
        threads=threads,
        ident="hwr-serve",
        max_request_body_size=2 * app.config["MAX_CONTENT_LENGTH"],
    )


def warm_up(model) -> None:
    """Run one tiny image through the model: the first TF call builds kernels and takes ~0.2 s."""
    from PIL import Image, ImageDraw

    image = Image.new("L", (64, 24), 255)
    ImageDraw.Draw(image).text((4, 6), "warm", fill=0)
    buf = io.BytesIO()
    image.save(buf, "PNG")
    model.recognize([buf.getvalue()])
