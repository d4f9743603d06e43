"""Local stand-ins for the outside services these tests talk to (no network here)."""

from __future__ import annotations

import json
import socketserver
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest


@dataclass
class NominatimStandIn:
    """A tiny Nominatim: answers /search from ``places`` (lower-case text -> place)."""

    url: str = ""
    places: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    fail_with: int | None = None      # answer every search with this HTTP status
    delay_s: float = 0.0

    def answer(self, params: dict[str, str]) -> list[dict[str, Any]]:
        wanted = (params.get("q") or params.get("postalcode") or "").lower()
        for text, place in self.places.items():
            if text == wanted:
                return [place]
        return []


def place(lat: float, lon: float, name: str) -> dict[str, Any]:
    """One search hit, shaped like Nominatim's jsonv2/json answer."""
    return {"place_id": 1, "licence": "test", "osm_type": "node", "osm_id": 1,
            "lat": str(lat), "lon": str(lon), "display_name": name, "class": "place",
            "type": "house", "importance": 0.5, "boundingbox": [str(lat), str(lat),
                                                                  str(lon), str(lon)]}


@pytest.fixture()
def nominatim() -> Iterator[NominatimStandIn]:
    stand_in = NominatimStandIn()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            parts = urlsplit(self.path)
            params = {k: v[0] for k, v in parse_qs(parts.query).items()}
            stand_in.requests.append({"path": parts.path, **params})
            if stand_in.delay_s:
                time.sleep(stand_in.delay_s)
            if parts.path != "/search":
                self.send_error(404)
                return
            if stand_in.fail_with is not None:
                self.send_error(stand_in.fail_with)
                return
            body = json.dumps(stand_in.answer(params)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stand_in.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield stand_in
    server.shutdown()
    server.server_close()


@dataclass
class SMTPStandIn:
    """Messages received by the stand-in SMTP server, and switches to make it misbehave."""

    host: str = "127.0.0.1"
    port: int = 0
    messages: list[dict[str, Any]] = field(default_factory=list)
    reject_recipients: set[str] = field(default_factory=set)
    defer_recipients: set[str] = field(default_factory=set)  # "451 try again later"


class _SMTPHandler(socketserver.StreamRequestHandler):
    """Just enough of RFC 5321 for smtplib: EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP, QUIT."""

    stand_in: SMTPStandIn

    def _reply(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\r\n")

    def handle(self) -> None:
        self._reply("220 stand-in ESMTP")
        sender, recipients = "", []
        while True:
            raw = self.rfile.readline()
            if not raw:
                return
            command = raw.decode().rstrip("\r\n")
            verb = command.split(" ", 1)[0].upper()
            if verb == "EHLO":
                self._reply("250-stand-in")
                self._reply("250 8BITMIME")
            elif verb == "HELO":
                self._reply("250 stand-in")
            elif verb == "MAIL":
                sender, recipients = command.split(":", 1)[1].split()[0].strip("<>"), []
                self._reply("250 OK")
            elif verb == "RCPT":
                address = command.split(":", 1)[1].strip().strip("<>")
                if address in self.stand_in.reject_recipients:
                    self._reply("550 no such user")
                elif address in self.stand_in.defer_recipients:
                    self._reply("451 try again later")
                else:
                    recipients.append(address)
                    self._reply("250 OK")
            elif verb == "DATA":
                self._reply("354 end with .")
                lines = []
                while (line := self.rfile.readline()) not in (b".\r\n", b""):
                    lines.append(line[1:] if line.startswith(b"..") else line)
                self.stand_in.messages.append({"from": sender, "to": recipients,
                                               "data": b"".join(lines).decode()})
                self._reply("250 queued")
            elif verb in ("RSET", "NOOP"):
                self._reply("250 OK")
            elif verb == "QUIT":
                self._reply("221 bye")
                return
            else:
                self._reply("502 not implemented")


@pytest.fixture()
def smtp_server() -> Iterator[SMTPStandIn]:
    stand_in = SMTPStandIn()
    handler = type("Handler", (_SMTPHandler,), {"stand_in": stand_in})
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    stand_in.port = server.server_address[1]
    yield stand_in
    server.shutdown()
    server.server_close()
