"""`make bench-web`: the app under gunicorn (2 workers) on PostgreSQL + Redis + localstripe,
driven from a second process over loopback. Prints requests/s and latency percentiles per
endpoint, errors, and a trivial endpoint's baseline from the same server in the same run.

    python scripts/bench_web.py [--seconds 15] [--threads 16] [--checkout-rate 50]
                                [--web-threads 4] [--only checkout]

Bounded: each closed-loop scenario runs for --seconds with --threads client threads (each
sends its next request when the last is answered: the most the server can do); the
checkout is then also offered at a fixed --checkout-rate for --seconds (open loop: does it
keep up, and how long does a patient wait). Every address is 127.0.0.1. It uses a scratch
database (dispensary_bench) that it re-creates.
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG_ADMIN = "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/postgres"
DB_URL = "postgresql+psycopg://postgres:postgres@127.0.0.1:5432/dispensary_bench"
STRIPE_KEY = "sk_test_dispensary_bench"
SEARCHES = ("atorvastatin", "paracetamol", "ibuprofen", "tablets")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int, path: str = "/healthz", timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            if conn.getresponse().status < 500:
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing answered on port {port}")


def prepare(env: dict[str, str]) -> None:
    """A fresh database with the demo data, plenty of stock and unlimited slots."""
    from sqlalchemy import create_engine, text

    admin = create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text('DROP DATABASE IF EXISTS "dispensary_bench" WITH (FORCE)'))
        conn.execute(text('CREATE DATABASE "dispensary_bench"'))
    admin.dispose()
    for args in (["db", "upgrade"], ["seed-demo"]):
        subprocess.run([str(BIN / "flask"), *args], cwd=ROOT, env=env, check=True,
                       capture_output=True)


def tune(env: dict[str, str]) -> None:
    """Enough stock and slot places that the benchmark measures the code, not sell-outs."""
    from sqlalchemy import create_engine, text

    engine = create_engine(DB_URL)
    with engine.begin() as conn:
        conn.execute(text("UPDATE delivery_slots SET capacity = 1000000, "
                          "fridge_capacity = 1000000"))
        conn.execute(text("UPDATE stock_batches SET quantity_on_hand = quantity_on_hand + "
                          "1000000 WHERE status = 'available'"))
        conn.execute(text(
            "INSERT INTO stock_movements (batch_id, kind, on_hand_change, reserved_change, "
            "reason, occurred_at) SELECT id, 'received', 1000000, 0, 'benchmark stock', now() "
            "FROM stock_batches WHERE status = 'available'"))
    engine.dispose()


class Client:
    def __init__(self, port: int) -> None:
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def call(self, method: str, path: str, body: object | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=data, headers=hdrs)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                if attempt == 2:
                    return 599, b""
        return 599, b""


def token(port: int, email: str, password: str) -> str:
    status, body = Client(port).call("POST", "/api/v1/auth/token",
                                     {"email": email, "password": password})
    if status != 200:
        raise SystemExit(f"cannot sign in {email}: {status} {body[:200]!r}")
    return str(json.loads(body)["access_token"])


def run_scenario(name: str, port: int, seconds: float, threads: int, make_request,  # type: ignore[no-untyped-def]
                 ok: set[int]) -> dict[str, object]:
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def worker(index: int) -> None:
        nonlocal errors
        client = Client(port)
        n = 0
        while time.monotonic() < stop_at:
            method, path, body, headers = make_request(index, n)
            started = time.perf_counter()
            status, _ = client.call(method, path, body, headers)
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                if status not in ok:
                    errors += 1
                    statuses[status] = statuses.get(status, 0) + 1
            n += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    began = time.monotonic()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return summary(name, latencies, time.monotonic() - began, errors, statuses)


def run_open_loop(name: str, port: int, seconds: float, rate: float, make_request,  # type: ignore[no-untyped-def]
                  ok: set[int], senders: int = 48) -> dict[str, object]:
    """Offer ``rate`` requests a second on a fixed schedule, whatever the answers take.

    A closed loop (each client waits for its answer before the next request) measures the
    queue its own clients build; this asks "does the server keep up with this arrival rate,
    and how long do patients wait?". Latency runs from each request's *scheduled* time, so
    a server that falls behind is charged for the wait (no coordinated omission).
    """
    latencies: list[float] = []
    errors = 0
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    total = int(seconds * rate)
    began = time.perf_counter() + 0.2
    next_index = 0

    def sender() -> None:
        nonlocal errors, next_index
        client = Client(port)
        while True:
            with lock:
                n = next_index
                next_index += 1
            if n >= total:
                return
            due = began + n / rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            method, path, body, headers = make_request(n, n)
            status, _ = client.call(method, path, body, headers)
            elapsed = time.perf_counter() - due
            with lock:
                latencies.append(elapsed)
                if status not in ok:
                    errors += 1
                    statuses[status] = statuses.get(status, 0) + 1

    pool = [threading.Thread(target=sender) for _ in range(senders)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return summary(name, latencies, time.perf_counter() - began, errors, statuses)


def summary(name: str, latencies: list[float], wall: float, errors: int,
            statuses: dict[int, int]) -> dict[str, object]:
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies \
            else float("nan")

    return {"endpoint": name, "requests": len(latencies), "rps": len(latencies) / wall,
            "p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "errors": errors,
            "statuses": statuses,
            "mean": statistics.fmean(latencies) * 1000 if latencies else float("nan")}


def checkout_request(patient_setup: list[tuple[dict[str, str], int, int]]):  # type: ignore[no-untyped-def]
    """Thread i checks out one unit as patient i, with that patient's card and address."""
    address_ids = json.loads(os.environ["BENCH_ADDRESSES"])
    methods = json.loads(os.environ["BENCH_METHODS"])

    def checkout(i: int, n: int):  # type: ignore[no-untyped-def]
        i %= len(patient_setup)
        headers, slot_id, medicine_id = patient_setup[i]
        return ("POST", "/api/v1/orders", {
            "lines": [{"medicine_id": medicine_id, "quantity": 1}],
            "address_id": address_ids[i], "slot_id": slot_id,
            "payment_method": methods[i]},
            {**headers, "Idempotency-Key": f"bench-{i}-{n}-{uuid.uuid4().hex[:8]}"})

    return checkout


def load(port: int, seconds: float, threads: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """The load generator (its own process): sign in, then each scenario in turn."""
    pharmacist = {"Authorization": "Bearer " + token(port, "pharmacist@example.com",
                                                     "demo-pharmacist-1")}
    patients = []
    for n in range(1, threads + 1):
        email = f"patient{n:03d}@example.com"
        patients.append({"Authorization": "Bearer " + token(port, email, "demo-patient-1")})
    patient_setup = []
    for headers in patients:
        client = Client(port)
        _, slots = client.call("GET", "/api/v1/slots?days=3", headers=headers)
        _, medicines = client.call("GET", "/api/v1/medicines?prescription_only=false&"
                                   "page_size=5", headers=headers)
        slot_id = json.loads(slots)[0]["id"]
        # Patients buy different products (five over-the-counter ones in turn), as shoppers
        # do; all of them book the same delivery slot.
        items = json.loads(medicines)["items"]
        medicine_id = items[len(patient_setup) % len(items)]["id"]
        patient_setup.append((headers, slot_id, medicine_id))
    results = []
    only = os.environ.get("BENCH_ONLY", "")
    rate = float(os.environ.get("BENCH_CHECKOUT_RATE", "50"))
    if only == "checkout":
        # The fixed-rate run first: localstripe slows down as it accumulates objects.
        results.append(run_open_loop(f"POST /api/v1/orders, {rate:g}/s offered (open loop)",
                                     port, seconds, rate, checkout_request(patient_setup),
                                     {201}))
        results.append(run_scenario("POST /api/v1/orders (checkout + card authorisation)",
                                    port, seconds, threads, checkout_request(patient_setup),
                                    {201}))
        out.put(results)
        return
    results.append(run_scenario("GET /healthz (baseline)", port, seconds, threads,
                                lambda i, n: ("GET", "/healthz", None, {}), {200}))
    results.append(run_scenario(
        "GET /api/v1/medicines (catalogue)", port, seconds, threads,
        lambda i, n: ("GET", f"/api/v1/medicines?q={SEARCHES[n % len(SEARCHES)]}", None,
                      pharmacist), {200}))
    results.append(run_scenario(
        "GET /api/v1/prescriptions (pharmacist queue)", port, seconds, threads,
        lambda i, n: ("GET", "/api/v1/prescriptions", None, pharmacist), {200}))
    results.append(run_open_loop(f"POST /api/v1/orders, {rate:g}/s offered (open loop)", port,
                                 seconds, rate, checkout_request(patient_setup), {201}))
    results.append(run_scenario("POST /api/v1/orders (checkout + card authorisation)", port,
                                seconds, threads, checkout_request(patient_setup), {201}))
    out.put(results)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--threads", type=int, default=16, help="client threads")
    parser.add_argument("--only", choices=["checkout"], help="run the checkout scenarios only")
    parser.add_argument("--checkout-rate", type=float, default=50,
                        help="orders a second offered in the open-loop checkout scenario")
    parser.add_argument("--web-threads", type=int, default=4,
                        help="threads per gunicorn worker (gunicorn.conf.py's default)")
    args = parser.parse_args()
    stripe_port, web_port = free_port(), free_port()
    env = {**os.environ, "DATABASE_URL": DB_URL, "REDIS_URL": "redis://127.0.0.1:6379/12",
           "FLASK_APP": "wsgi.py", "STRIPE_API_KEY": STRIPE_KEY,
           "STRIPE_API_BASE": f"http://127.0.0.1:{stripe_port}", "LOG_LEVEL": "WARNING",
           "ROUTING_TIME_LIMIT_S": "5"}
    print("preparing the database and demo data...", file=sys.stderr)
    prepare(env)
    procs = [subprocess.Popen([str(BIN / "python"), "-c", (
        "import sys, localstripe.resources;"
        "localstripe.resources.Store.dump_to_disk = lambda self: None;"
        "from localstripe.server import start;"
        f"sys.argv = ['localstripe', '--port', '{stripe_port}', '--from-scratch']; start()")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    procs.append(subprocess.Popen(
        [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "--workers", "2",
         "--threads", str(args.web_threads), "--bind", f"127.0.0.1:{web_port}",
         "--log-level", "warning", "wsgi:app"], cwd=ROOT, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        wait_for(stripe_port, "/js.stripe.com/v3/")
        wait_for(web_port)
        # Listing slots creates the next days' slots; only then can tune() open them up.
        Client(web_port).call("GET", "/api/v1/slots?days=3", headers={
            "Authorization": "Bearer " + token(web_port, "patient001@example.com",
                                               "demo-patient-1")})
        tune(env)
        import stripe
        from sqlalchemy import create_engine, text

        client = stripe.StripeClient(STRIPE_KEY, base_addresses={"api": env["STRIPE_API_BASE"]})
        methods = [client.v1.payment_methods.create({
            "type": "card", "card": {"number": "4242424242424242", "exp_month": 12,
                                     "exp_year": 2031, "cvc": "123"}}).id
                   for _ in range(args.threads)]
        engine = create_engine(DB_URL)
        with engine.connect() as conn:
            addresses = [conn.execute(text(
                "SELECT a.id FROM addresses a JOIN patients p ON p.id = a.patient_id "
                "JOIN users u ON u.id = p.user_id WHERE u.email = :e"),
                {"e": f"patient{n:03d}@example.com"}).scalar_one()
                for n in range(1, args.threads + 1)]
        engine.dispose()
        os.environ["BENCH_ADDRESSES"] = json.dumps(addresses)
        os.environ["BENCH_METHODS"] = json.dumps(methods)
        os.environ["BENCH_ONLY"] = args.only or ""
        os.environ["BENCH_CHECKOUT_RATE"] = str(args.checkout_rate)
        queue: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
        loader = multiprocessing.Process(target=load, args=(web_port, args.seconds,
                                                            args.threads, queue))
        loader.start()
        results = queue.get(timeout=args.seconds * 10 + 300)
        loader.join(30)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    print(f"\ngunicorn 2 workers x {args.web_threads} threads, {args.threads} client threads, "
          f"{args.seconds:.0f} s per scenario, loopback\n")
    print(f"{'endpoint':<52} {'requests':>8} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} "
          f"{'p99 ms':>8} {'errors':>7}")
    for r in results:
        print(f"{r['endpoint']:<52} {r['requests']:>8} {r['rps']:>8.1f} {r['p50']:>8.1f} "
              f"{r['p95']:>8.1f} {r['p99']:>8.1f} {r['errors']:>7}"
              + (f"  {r['statuses']}" if r["statuses"] else ""))
    if len(results) > 1 and results[0]["endpoint"].startswith("GET /healthz"):
        print(f"\ncatalogue / baseline throughput: {results[1]['rps'] / results[0]['rps']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
