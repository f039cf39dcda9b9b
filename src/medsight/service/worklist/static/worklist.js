// The worklist page: rows from /api/worklist, refreshed every 5 seconds, with the reader's
// sorting and filters kept in the query. Research use only, not for diagnostic use.
const colours = JSON.parse(document.getElementById("worklist").dataset.colours);
let sort = "priority", order = "asc";
function esc(t) { const d = document.createElement("div"); d.textContent = t ?? "";
  return d.innerHTML; }
function dicomDate(d) { return d && d.length === 8 ? `${d.slice(0,4)}-${d.slice(4,6)}-${d.slice(6)}` : ""; }
async function refresh() {
  const params = new URLSearchParams(new FormData(document.getElementById("filters")));
  for (const [k, v] of [...params]) if (!v) params.delete(k);
  params.set("sort", sort); params.set("order", order); params.set("limit", "200");
  const response = await fetch("/api/worklist?" + params);
  const error = document.getElementById("error");
  if (!response.ok) { error.textContent = (await response.json()).detail; return; }
  error.textContent = "";
  const data = await response.json();
  const rows = data.items.map(i => `<tr data-priority="${esc(i.priority)}" data-study="${esc(i.study_key)}">` +
    `<td><span class="level" style="background:${colours[i.priority] || "#333"}">` +
    `${esc(i.priority)}</span></td>` +
    `<td><a href="/studies/${esc(i.study_key)}/viewer">${esc((i.patient_name || "(no name)").replaceAll("^", " "))}</a>` +
    ` (<a href="/studies/${esc(i.study_key)}/report.html">report</a>)</td>` +
    `<td>${esc(i.patient_id)}</td><td>${esc(i.patient_age)} ${esc(i.patient_sex)}</td>` +
    `<td>${esc(i.accession_number)}</td><td>${esc(dicomDate(i.study_date))} ${esc((i.study_time || "").slice(0,4))}</td>` +
    `<td>${esc(i.modality)}</td><td>${esc(i.body_part)}</td><td>${esc(i.study_description)}</td>` +
    `<td>${i.series_count ?? ""} / ${i.instance_count ?? ""}</td>` +
    `<td>${Math.round(i.waiting_seconds / 60)} min</td>` +
    `<td>${i.reasons.map(esc).join("<br>")}</td>` +
    `<td>${(i.models || []).map(esc).join("<br>")}</td></tr>`);
  document.getElementById("rows").innerHTML = rows.join("") ||
    '<tr><td colspan="13">No analysed studies match.</td></tr>';
  document.getElementById("total").textContent = `${data.total} studies`;
  document.getElementById("updated").textContent =
    `updated ${new Date().toLocaleTimeString()}`;
}
document.getElementById("filters").addEventListener("submit", e => { e.preventDefault(); refresh(); });
for (const a of document.querySelectorAll("th a[data-sort]")) a.addEventListener("click", e => {
  e.preventDefault();
  if (sort === a.dataset.sort) order = order === "asc" ? "desc" : "asc";
  else { sort = a.dataset.sort; order = "asc"; }
  refresh();
});
refresh();
setInterval(refresh, 5000);
