"""``scratchnet dashboard``: draw a run's dashboard once, serve it live, or animate it."""

from __future__ import annotations


def dashboard(args) -> int:
    if args.serve is not None:
        from ..dashboard.serve import serve
        return serve(args.run, args.serve)
    if args.movie is not None:
        from ..dashboard.movie import movie
        print(f"wrote {movie(args.run, args.movie, fps=args.fps)}")
        return 0
    from ..dashboard import render
    print(f"wrote {render(args.run, args.out)}")
    return 0
