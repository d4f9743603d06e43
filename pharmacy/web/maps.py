"""Route maps drawn as SVG from coordinates alone: no tile server, no script, works offline."""

from __future__ import annotations

import math
from collections.abc import Sequence

COLOURS = ("#005eb8", "#b35c00", "#2e7d32", "#6a1b9a", "#c62828", "#00838f", "#5d4037")


def routes_svg(depot: tuple[float, float], routes: Sequence[Sequence[tuple[float, float]]], *,
               width: int = 360, height: int = 260) -> str:
    """Each route from the depot (square) through its numbered stops and back.

    Only numbers go into the markup (coordinates and sequence numbers), so the result is
    safe to embed as-is.
    """
    everything = [depot, *(p for route in routes for p in route)]
    lats = [p[0] for p in everything]
    lons = [p[1] for p in everything]
    scale_lon = math.cos(math.radians(sum(lats) / len(lats)))
    span = max(max(lats) - min(lats), (max(lons) - min(lons)) * scale_lon, 1e-4)
    pad = 18

    def xy(p: tuple[float, float]) -> tuple[float, float]:
        x = pad + (p[1] - min(lons)) * scale_lon / span * (width - 2 * pad)
        y = height - pad - (p[0] - min(lats)) / span * (height - 2 * pad)
        return x, y

    stops = sum(len(r) for r in routes)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
             f'role="img" aria-label="Map of {len(routes)} route(s) with {stops} stops">']
    for index, route in enumerate(routes):
        colour = COLOURS[index % len(COLOURS)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in map(xy, [depot, *route, depot]))
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" '
                     'stroke-width="2"/>')
        for n, point in enumerate(route, start=1):
            x, y = xy(point)
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="8" fill="#fff" '
                         f'stroke="{colour}"/><text x="{x:.1f}" y="{y + 3.5:.1f}" '
                         f'font-size="9" text-anchor="middle">{n}</text>')
    dx, dy = xy(depot)
    parts.append(f'<rect x="{dx - 6:.1f}" y="{dy - 6:.1f}" width="12" height="12" fill="#333"/>')
    parts.append("</svg>")
    return "".join(parts)
