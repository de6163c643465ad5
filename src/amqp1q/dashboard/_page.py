"""The dashboard's HTML, rendered on the server: the queue table, the dead-letter browser and
the confirm step. Every value is escaped; the only script refreshes the table."""

from __future__ import annotations

import html
import json
import urllib.parse
from collections.abc import Sequence

from .._inspection import PeekedJob
from ._sampler import Sampler

__all__ = ["confirm_page", "dead_letter_page", "index_page", "rows", "sparkline"]

_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;width:100%}th,td{padding:.35em .6em;border-bottom:1px solid #ddd;
text-align:right}th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}
.dead{color:#b00020;font-weight:600}.err{color:#b00020}svg{vertical-align:middle}
.btn{padding:.3em .8em;border:1px solid #888;border-radius:4px;background:#fafafa;
text-decoration:none;color:#222;cursor:pointer}.danger{border-color:#b00020;color:#b00020}
pre{white-space:pre-wrap;max-width:60em;margin:0}small{color:#666}
"""

_REFRESH = """
<script>
setInterval(async () => {
  const r = await fetch(%s);
  if (r.ok) document.getElementById('rows').innerHTML = await r.text();
}, %d);
</script>
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _link(path: str, token: str | None, **query: str) -> str:
    if token:
        query["token"] = token
    return path + ("?" + urllib.parse.urlencode(query) if query else "")


def _layout(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{_e(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}</body></html>"
    )


def sparkline(values: Sequence[float], width: int = 120, height: int = 24) -> str:
    """An inline SVG polyline of ``values`` (an empty box for fewer than two)."""
    if len(values) < 2:
        return f"<svg width='{width}' height='{height}'></svg>"
    top = max(values) or 1.0
    step = width / (len(values) - 1)
    points = " ".join(
        f"{i * step:.1f},{height - 2 - (v / top) * (height - 4):.1f}" for i, v in enumerate(values)
    )
    return (
        f"<svg width='{width}' height='{height}' role='img'><polyline fill='none' "
        f"stroke='#3366cc' stroke-width='1.5' points='{points}'/></svg>"
    )


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _count(value: int | None) -> str:
    return "—" if value is None else str(value)


def _rate(sampler: Sampler, name: str, field: str) -> str:
    rates = sampler.rates(name, field)
    if rates is None:
        return f"<small>no totals</small> {sparkline(sampler.readies(name))}"
    now = f"{rates[-1]:.1f}/s" if rates else "…"
    return f"<span class='rate'>{now}</span> {sparkline(rates)}"


def rows(sampler: Sampler, token: str | None) -> str:
    """The table body: one row per queue."""
    out = []
    for name in sampler.queues:
        sample = sampler.latest(name)
        link = _link("/dead-letters", token, queue=name)
        if sample is None or sample.depth is None:
            error = sample.error if sample is not None else "not sampled yet"
            out.append(
                f"<tr data-queue='{_e(name)}'><td>{_e(name)}</td>"
                f"<td colspan='7' class='err'>{_e(error)}</td></tr>"
            )
            continue
        d = sample.depth
        dead_class = "dead" if d.dead_lettered else ""
        out.append(
            f"<tr data-queue='{_e(name)}'><td>{_e(name)}</td>"
            f"<td class='ready'>{_count(d.ready)}</td>"
            f"<td class='scheduled'>{_count(d.scheduled)}</td>"
            f"<td class='in-flight'>{_count(d.in_flight)}</td>"
            f"<td class='dead-lettered {dead_class}'>"
            f"<a href='{_e(link)}'>{_count(d.dead_lettered)}</a></td>"
            f"<td>{_rate(sampler, name, 'delivered')}</td>"
            f"<td>{_rate(sampler, name, 'acked')}</td>"
            f"<td class='oldest'>{_age(d.oldest_age())}</td></tr>"
        )
    return "".join(out)


def index_page(sampler: Sampler, token: str | None, refresh_ms: int) -> str:
    head = (
        "<tr><th>queue</th><th>ready</th><th>scheduled</th><th>in flight</th>"
        "<th>dead-lettered</th><th>consumed</th><th>acked</th><th>oldest job</th></tr>"
    )
    body = (
        "<h1>amqp1q queues</h1>"
        f"<table><thead>{head}</thead><tbody id='rows'>{rows(sampler, token)}</tbody></table>"
        f"<p><small>sampled every {sampler.interval:g} s; rates between samples, the sparklines "
        f"over the last {_age(sampler.window)} at most</small></p>"
        + _REFRESH
        % (json.dumps(_link("/rows", token)), refresh_ms)
    )
    return _layout("amqp1q dashboard", body)


def dead_letter_page(
    queue: str, jobs: list[PeekedJob], token: str | None, message: str | None = None
) -> str:
    items = []
    for job in jobs:
        payload = json.dumps(job.to_dict()["payload"], ensure_ascii=False)
        items.append(
            f"<tr class='letter'><td>{_e(job.name)}<br><small>{_e(job.id)}</small></td>"
            f"<td class='reason'>{_e(job.dead_letter_reason)}</td>"
            f"<td>{_e(job.dead_letter_description)}</td><td>{job.attempt}</td>"
            f"<td>{_e(job.enqueued_at.isoformat() if job.enqueued_at else '')}</td>"
            f"<td style='text-align:left'><pre>{_e(payload[:500])}</pre></td></tr>"
        )
    note = f"<p class='message'>{_e(message)}</p>" if message else ""
    body = (
        f"<p><a href='{_e(_link('/', token))}'>&larr; queues</a></p>"
        f"<h1>Dead letters of {_e(queue)}</h1>{note}"
        f"<p><a id='replay' class='btn' href='"
        f"{_e(_link('/confirm', token, action='replay', queue=queue))}'>Replay all</a> "
        f"<a id='purge' class='btn danger' href='"
        f"{_e(_link('/confirm', token, action='purge', queue=queue))}'>Purge</a></p>"
        "<table><thead><tr><th>job</th><th>reason</th><th>description</th><th>attempt</th>"
        f"<th>enqueued</th><th>payload</th></tr></thead><tbody>{''.join(items)}</tbody></table>"
        f"<p><small>showing the first {len(jobs)}</small></p>"
    )
    return _layout(f"dead letters of {queue}", body)


def confirm_page(action: str, queue: str, count: int | None, token: str | None, nonce: str) -> str:
    what = "move back to the queue" if action == "replay" else "delete for good"
    many = "every job" if count is None else f"{count} job(s)"
    body = (
        f"<h1>{_e(action.capitalize())} the dead letters of {_e(queue)}?</h1>"
        f"<p>This will {what} {many} in its dead-letter queue.</p>"
        f"<form method='post' action='{_e(_link('/' + action, token))}'>"
        f"<input type='hidden' name='queue' value='{_e(queue)}'>"
        f"<input type='hidden' name='nonce' value='{_e(nonce)}'>"
        f"<button id='confirm' class='btn danger' type='submit'>Yes, {_e(action)}</button> "
        f"<a class='btn' href='{_e(_link('/dead-letters', token, queue=queue))}'>Cancel</a>"
        "</form>"
    )
    return _layout(f"confirm {action}", body)
