"""The bench's written results: Markdown tables (median and min-max of the repeats), the targets, a chart."""

from __future__ import annotations

from pathlib import Path

# What the bench checks (docs/PERFORMANCE.md, Targets); tests check correctness, not these.
TARGET_ONE_TEXT_P50_MS = 3.0
TARGET_CPU_RATIO = 2.0  # served CPU per text at 32 users / in-process CPU per text
TARGET_CPU_USERS = "32"


def spread(cell: dict, key: str, fmt: str = "{:.0f}") -> str:
    """'median (min-max)' of one figure over a cell's repeats."""
    value = cell.get(key)
    if value is None:
        return "-"
    lo, hi = cell.get("range", {}).get(key, (value, value))
    if cell.get("repeats", 1) < 2:
        return fmt.format(value)
    return f"{fmt.format(value)} ({fmt.format(lo)}-{fmt.format(hi)})"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a is not None and b else ""


def limit_line(results: dict) -> str:
    lim = results["limit"]
    line = (f"in-process limit (batches of {lim['batch_size']} requests of the locust mix, {lim['workers']} processes x "
            f"{lim['threads']} torch threads, as served): **{lim['texts_per_s']:.0f} texts/s**, "
            f"**{lim['cpu_ms_per_text']:.3f} ms CPU per text** (JSON; runs {', '.join(f'{r:.0f}' for r in lim['runs'])} texts/s)")
    if results.get("limit_npz"):
        line += f"; .npz {results['limit_npz']['texts_per_s']:.0f} texts/s"
    one = results.get("limit_one_text")
    if one:
        line += (f"\n\none text per request (`\"return\": [\"hidden\"]`), in-process CPU per text: "
                 f"{one['batched']['cpu_ms_per_text']:.3f} ms in batches of {one['batched']['batch_size']}, "
                 f"{one['solo']['cpu_ms_per_text']:.3f} ms alone")
    return line


def locust_table(results: dict) -> list[str]:
    servers = results["servers"]
    peers = [p for p in servers if p != "torchserve"]
    in_process = results["limit"]["cpu_ms_per_text"]
    head = ("| server | users | texts/s | req/s | p50 ms | p99 ms | 1-text p50 ms | fails | server batch | server CPU ms/text | "
            "x in-process | locust cores | others' cores | /limit | " + " | ".join(f"/{p}" for p in peers) + " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for server, cells in servers.items():
        for users, c in cells.items():
            ratios = [_ratio(c["texts_per_s"], servers[p].get(users, {}).get("texts_per_s")) if server == "torchserve" else ""
                      for p in peers]
            cpu = c.get("server_cpu_ms_per_text")
            lines.append(
                f"| {server} | {users} | {spread(c, 'texts_per_s')} | {c['req_per_s']:.0f} | {spread(c, 'p50_ms')} | "
                f"{spread(c, 'p99_ms')} | {spread(c, 'one_text_p50_ms')} | {c['failures']} | {c['mean_server_batch']:.1f} | "
                f"{spread(c, 'server_cpu_ms_per_text', '{:.3f}')} | {_ratio(cpu, in_process)} | "
                f"{spread(c, 'loadgen_cores', '{:.2f}')} | {spread(c, 'other_cores', '{:.2f}')} | "
                f"{c['texts_per_s'] / results['limit']['texts_per_s']:.0%} | " + " | ".join(ratios) + " |"
            )
    return lines


def wrk_table(results: dict) -> list[str]:
    head = ("| server | connections | req/s | p50 ms | p99 ms | fails | server CPU ms/request | wrk cores | others' cores | "
            "locust 1-text p50 ms (mix, same users) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for server, cells in results["wrk"].items():
        for conns, c in cells.items():
            mix = results.get("servers", {}).get(server, {}).get(conns, {})
            lines.append(
                f"| {server} | {conns} | {spread(c, 'req_per_s')} | {spread(c, 'p50_ms', '{:.2f}')} | {spread(c, 'p99_ms', '{:.1f}')} | "
                f"{c['failures']} | {spread(c, 'server_cpu_ms_per_text', '{:.3f}')} | {spread(c, 'loadgen_cores', '{:.3f}')} | "
                f"{spread(c, 'other_cores', '{:.2f}')} | {spread(mix, 'one_text_p50_ms') if mix else '-'} |"
            )
    return lines


def targets(results: dict) -> list[tuple[str, str, bool | None]]:
    """(target, what this run measured, met?) for every target the bench checks; None = not measured."""
    out: list[tuple[str, str, bool | None]] = []
    servers = results.get("servers", {})
    ts = servers.get("torchserve", {})
    for peer in (p for p in servers if p != "torchserve"):
        for users, c in ts.items():
            other = servers[peer].get(users)
            if not other:
                continue
            faster = c["texts_per_s"] >= other["texts_per_s"]
            p99 = c["p99_ms"] <= other["p99_ms"]
            out.append((f"TorchServe >= 1.0x {peer} at {users} user{'' if users == '1' else 's'}, p99 no worse",
                        f"{c['texts_per_s'] / other['texts_per_s']:.2f}x, p99 {c['p99_ms']:.0f} vs {other['p99_ms']:.0f} ms",
                        faster and p99))
    one = results.get("wrk", {}).get("torchserve", {}).get("1")
    if one:
        out.append((f"one text at one user: p50 <= {TARGET_ONE_TEXT_P50_MS:g} ms (wrk)", f"{spread(one, 'p50_ms', '{:.2f}')} ms",
                    one["p50_ms"] <= TARGET_ONE_TEXT_P50_MS))
    busy = ts.get(TARGET_CPU_USERS)
    if busy and busy.get("server_cpu_ms_per_text") is not None:
        ratio = busy["server_cpu_ms_per_text"] / results["limit"]["cpu_ms_per_text"]
        out.append((f"{TARGET_CPU_USERS} users: server CPU per text <= {TARGET_CPU_RATIO:g}x in-process",
                    f"{busy['server_cpu_ms_per_text']:.3f} vs {results['limit']['cpu_ms_per_text']:.3f} ms = {ratio:.2f}x",
                    ratio <= TARGET_CPU_RATIO))
    return out


def markdown(results: dict) -> str:
    """Everything results.md holds (also printed at the end of a run)."""
    cfg = results["config"]
    lines = [limit_line(results), "",
             f"Locust, the weighted mix (`loadtests/workload.py`), {cfg['seconds']:g} s per cell, {cfg['repeats']} repeats "
             "interleaved across servers: median (min-max). Server CPU from /proc (frontend + workers, all processes of the "
             "server); locust cores and others' cores (the rest of the machine, this bench included) of 2.", ""]
    lines += locust_table(results)
    if results.get("wrk"):
        lines += ["", "wrk (C, one thread), one text per request with `\"return\": [\"hidden\"]`, same repeats:", ""]
        lines += wrk_table(results)
    if results.get("formats"):
        f = results["formats"]
        lines += ["", f"Large outputs (8-32 texts with `output`), TorchServe, {f['users']} users:", "",
                  "| format | req/s | texts/s | p50 ms | p99 ms | mean body KB | client decode ms |", "|---|---|---|---|---|---|---|"]
        for fmt in ("json", "npz"):
            c = f[fmt]
            lines.append(f"| {fmt} | {c['req_per_s']:.1f} | {spread(c, 'texts_per_s')} | {c['p50_ms']:.0f} | {c['p99_ms']:.0f} | "
                         f"{c['mean_response_bytes'] / 1e3:.0f} | {c['decode_ms']:.2f} |")
    checks = targets(results)
    if checks:
        lines += ["", "| target | this run (medians) | met |", "|---|---|---|"]
        lines += [f"| {name} | {seen} | {'yes' if ok else 'no'} |" for name, seen, ok in checks]
    m = results["machine"]
    lines += ["", f"{m['cpus']} CPUs; load average before {m['load_before']}, after {m.get('load_after')}"]
    return "\n".join(lines)


def chart(results: dict, path: Path) -> None:
    """Throughput, latency and server CPU per text against users, one line per server."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4))
    for server, cells in results["servers"].items():
        users = [int(u) for u in cells]
        line = ax1.errorbar(users, [c["texts_per_s"] for c in cells.values()], marker="o", label=server, capsize=3,
                            yerr=_yerr(cells, "texts_per_s"))
        color = line.lines[0].get_color()  # one colour per server in every panel
        ax2.plot(users, [c["p99_ms"] for c in cells.values()], marker="o", color=color, label=f"{server} p99")
        ax2.plot(users, [c["p50_ms"] for c in cells.values()], marker=".", linestyle="--", color=color, label=f"{server} p50")
        if all(c.get("server_cpu_ms_per_text") is not None for c in cells.values()):
            ax3.errorbar(users, [c["server_cpu_ms_per_text"] for c in cells.values()], marker="o", label=server, capsize=3,
                         color=color, yerr=_yerr(cells, "server_cpu_ms_per_text"))
    ax1.axhline(results["limit"]["texts_per_s"], color="gray", linestyle=":", label="in-process limit")
    ax3.axhline(results["limit"]["cpu_ms_per_text"], color="gray", linestyle=":", label="in-process")
    ax1.set(xscale="log", xlabel="concurrent users", ylabel="texts/s", title="throughput (median, min-max)")
    ax2.set(xscale="log", yscale="log", xlabel="concurrent users", ylabel="ms", title="latency (median of repeats)")
    ax3.set(xscale="log", xlabel="concurrent users", ylabel="CPU ms per text", title="server CPU per text (/proc)")
    for ax in (ax1, ax2, ax3):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _yerr(cells: dict, key: str) -> list[list[float]]:
    lo = [c[key] - c.get("range", {}).get(key, (c[key], c[key]))[0] for c in cells.values()]
    hi = [c.get("range", {}).get(key, (c[key], c[key]))[1] - c[key] for c in cells.values()]
    return [lo, hi]
