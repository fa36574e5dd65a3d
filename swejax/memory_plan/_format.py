"""The planner's report as text (`format_report`): the run, XLA's train step, the analytic
breakdown, the rollout by layout with its estimates, and a verdict per phase."""

from __future__ import annotations


def _gib(n: float) -> str:
    return f"{n / 2**30:9.2f}"


def format_report(report: dict) -> str:
    i, a = report["inputs"], report["analytic"]
    mesh = " ".join(f"{k}={v}" for k, v in i["mesh"].items())
    lines = [
        f"run {i['name']} ({i['phase']} step): {i['preset']}, {i['seq']:,} tokens per row, "
        f"mesh {mesh} ({i['devices']} devices), remat={i['remat']}, {i['dtype']} compute / "
        f"{i['param_dtype']} params",
        f"batch: {i['rows_per_micro_batch']} rows per micro-batch ({i['micro_batch_rows']} per "
        f"batch shard) x {i['micro_batches']} micro-batches; attention {i['attention']}; "
        f"rollout ({i['rollout_layout']} layout): {i['rollout_slots']:,} slots x "
        f"{i['rollout_capacity']:,} tokens, {i['pool_pages']:,} KV pages",
        "",
    ]
    lines += _xla_lines(report.get("xla"))
    rollout = report.get("xla_rollout")
    if rollout:
        lines += [
            f"XLA, the engine's decode program ({i['rollout_layout']} layout; GiB per device)",
            f"  {'arguments (weights, KV pool)':34}{_gib(rollout['argument'])}",
            f"  {'temp':34}{_gib(rollout['temp'])}",
            f"  {'peak':34}{_gib(rollout['peak'])}",
            f"  {'+ training state beside it':34}{_gib(rollout['beside'])}",
            f"  {'rollout phase':34}{_gib(rollout['rollout_phase'])}",
        ]
        if rollout["pages_cut"]:
            lines.append(
                f"  (the pool sized to fit gave up {rollout['pages_cut']:,} pages to XLA's "
                "temporaries: the rollout phase counts the pool without them)"
            )
        lines.append("")
    lines.append(f"analytic, attention={a['attention']} (GiB per device)")
    for item in a["items"]:
        lines.append(f"  {item['name']:34}{_gib(item['bytes'])}  {item['phase']:8} {item['note']}")
    lines += [
        f"  {'train step':34}{_gib(a['train_step'])}",
        f"  {'train phase':34}{_gib(a['train_phase'])}",
        f"  {'rollout phase':34}{_gib(a['rollout_phase'])}",
        "",
        *_rollout_lines(report["rollout"]),
        f"device {i['device_memory_gib']:g} GiB, usable {report['usable_bytes'] / 2**30:.1f} GiB "
        f"({i['headroom']:.0%} headroom)",
    ]
    for name, ok in report["fits"].items():
        lines.append(f"  {name:34}{'fits' if ok else 'DOES NOT FIT'}")
    lines += ["", *(f"note: {n}" for n in report["notes"])]
    lines.append(f"peak host RSS of this planner: {report['peak_rss_gib']:.2f} GiB")
    return "\n".join(lines)


def _xla_lines(xla: dict | None) -> list[str]:
    if not xla:
        return []
    if "error" in xla:
        required = xla["required_temp"]
        return [
            f"XLA, {xla['compiler']} compile with attention={xla['attention']}: refused",
            f"  {xla['error']}",
            f"  {'temp required':34}{_gib(required) if required else '?':>9}",
            "",
        ]
    lines = [
        f"XLA, {xla['compiler']} compile with attention={xla['attention']} (GiB per device)",
        f"  {'arguments':34}{_gib(xla['argument'])}",
        f"  {'outputs':34}{_gib(xla['output'])}",
        f"  {'aliased (donated)':34}{_gib(xla['alias'])}",
        f"  {'temp':34}{_gib(xla['temp'])}",
        f"  {'generated code':34}{_gib(xla['generated_code'])}",
        f"  {'peak = arg + out - alias + temp':34}{_gib(xla['peak'])}",
    ]
    if "attention_alone_temp" in xla:
        lines.append(f"  {'stand-in attention alone, temp':34}{_gib(xla['attention_alone_temp'])}")
    if xla["float32_residual_copy"]:
        lines.append(f"  {'CPU float32 residual copy':34}{_gib(xla['float32_residual_copy'])}")
    if xla["projected_peak"] is None:
        lines.append(f"  {'projected, attention=' + xla['attention']:34}{'n/a':>9}")
    else:
        lines += [
            f"  {'projected':34}{_gib(xla['projected_peak'])}",
            f"  {'train phase':34}{_gib(xla['train_phase'])}",
        ]
    return [
        *lines,
        f"  lowered in {xla['lower_s']:.1f} s, compiled in {xla['compile_s']:.1f} s",
        "",
    ]


def _rollout_lines(rollout: dict) -> list[str]:
    """Both layouts side by side: the engine, memory, what a step moves, the estimates."""
    h, assume, layouts = rollout["hardware"], rollout["assumptions"], rollout["layouts"]
    names = tuple(layouts)
    lines = [
        f"the rollout by layout, on {h['name']} ({h['memory_gib']:g} GiB, HBM "
        f"{h['hbm_gbps']:g} GB/s, {h['intra_host_gbps']:g} GB/s within a host and "
        f"{h['cross_host_gbps']:g} GB/s across, {h['devices_per_host']} devices a host)",
        f"  assumed episode: {assume['turns']} turns x ({assume['reply_tokens']} sampled + "
        f"{assume['observation_tokens']} observation tokens) + {assume['prompt_tokens']} prompt "
        f"= {assume['episode_tokens']:,} tokens, mean context {assume['mean_context']:,}",
        f"  {'':36}" + "".join(f"{name + ' layout':>18}" for name in names),
    ]

    def row(label: str, cell) -> None:
        cells = ["error" if "error" in layouts[n] else cell(layouts[n]) for n in names]
        lines.append(f"  {label:36}" + "".join(f"{c:>18}" for c in cells))

    def compiled(key):
        def cell(plan):
            c = plan.get("compiled")
            if not c or "error" in c:
                return "n/a" if not c else "refused"
            return f"{c['collectives'][key] / 2**30:.3f}"

        return cell

    def estimate(key, scale, fmt):
        return lambda plan: fmt.format(plan["estimate"][key] * scale)

    row("tensor x replicas", lambda p: f"{p['tensor']} x {p['replicas']}")
    row("slots (per replica)", lambda p: f"{p['num_slots']:,} ({p['slots_per_replica']})")
    row("KV pages", lambda p: f"{p['num_pages']:,}")
    row("rollout phase, GiB per device", lambda p: f"{p['rollout_phase'] / 2**30:.2f}")
    row("HBM read per step, GiB", lambda p: f"{p['hbm_bytes_per_step']['total'] / 2**30:.2f}")
    row("collectives per step, within host GiB", compiled("per_step_within_host"))
    row("collectives per step, across hosts GiB", compiled("per_step_across_hosts"))
    row("collectives per call, within host GiB", compiled("per_call_within_host"))
    row("collectives per call, across hosts GiB", compiled("per_call_across_hosts"))
    row("decode step (estimate), ms", estimate("step_s", 1e3, "{:.1f}"))
    row("decode tokens/s, all slots (estimate)", estimate("tokens_per_s", 1, "{:,.0f}"))
    row("one iteration's rollout (estimate), min", estimate("rollout_s", 1 / 60, "{:,.1f}"))
    for name in names:
        if "error" in layouts[name]:
            lines.append(f"  {name} layout: {layouts[name]['error']}")
    first = next((layouts[n] for n in names if "error" not in layouts[n]), None)
    if first:
        e = first["estimate"]
        lines.append(
            f"  (an iteration: {e['episodes']:,} episodes in {e['waves']} waves of the slots; "
            "prefill of prompts and observations included)"
        )
    return [*lines, ""]
