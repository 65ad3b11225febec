// The cluster index: sorting, filtering and paging of the table, from the JSON in the page.
(function () {
  const data = JSON.parse(document.getElementById("clusters-data").textContent);
  const columns = JSON.parse(document.getElementById("clusters-columns").textContent);
  const body = document.querySelector("#clusters tbody");
  const info = document.getElementById("page-info");
  const filter = document.getElementById("filter");
  const pageSize = 100;
  let rows = data, page = 0, sortKey = "size", ascending = false;

  function cell(row, col) {
    const value = row[col.key];
    const td = document.createElement("td");
    if (col.kind === "num") td.className = "num";
    if (col.key === "name") {
      const a = document.createElement("a");
      a.href = row.page;
      a.textContent = value;
      td.appendChild(a);
    } else {
      td.textContent = value === null || value === undefined ? "–" : (col.digits !== undefined ? Number(value).toFixed(col.digits) : value);
    }
    return td;
  }

  function render() {
    const pages = Math.max(1, Math.ceil(rows.length / pageSize));
    page = Math.min(page, pages - 1);
    body.replaceChildren();
    for (const row of rows.slice(page * pageSize, (page + 1) * pageSize)) {
      const tr = document.createElement("tr");
      tr.className = "cluster-row";
      for (const col of columns) tr.appendChild(cell(row, col));
      body.appendChild(tr);
    }
    info.textContent = `${rows.length} of ${data.length} clusters, page ${page + 1} of ${pages}`;
    document.body.dataset.rowsShown = String(body.children.length);
  }

  function sort() {
    rows = rows.slice().sort((a, b) => {
      const x = a[sortKey], y = b[sortKey];
      const order = x === y ? 0 : (x === null ? 1 : (y === null ? -1 : (x < y ? -1 : 1)));
      return ascending ? order : -order;
    });
    document.querySelectorAll("#clusters th").forEach((th) => {
      th.className = th.dataset.key === sortKey ? (ascending ? "sorted-asc" : "sorted-desc") : "";
    });
  }

  document.querySelectorAll("#clusters th").forEach((th) => th.addEventListener("click", () => {
    ascending = th.dataset.key === sortKey ? !ascending : th.dataset.kind !== "num";
    sortKey = th.dataset.key;
    sort(); render();
  }));
  filter.addEventListener("input", () => {
    const text = filter.value.trim().toLowerCase();
    rows = data.filter((r) => !text || r.search.includes(text));
    page = 0; sort(); render();
  });
  document.getElementById("prev").addEventListener("click", () => { page = Math.max(0, page - 1); render(); });
  document.getElementById("next").addEventListener("click", () => { page += 1; render(); });
  sort(); render();
})();
