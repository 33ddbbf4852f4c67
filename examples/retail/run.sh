#!/usr/bin/env bash
# The bundled example on the embedded default (SQLite catalog + local warehouse in
# examples/retail/.lakectl/): apply the manifests, query the result, show history.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../.."
cargo build -q
lakectl=${CARGO_TARGET_DIR:-target}/debug/lakectl
m="$here/manifests"
echo "\$ lakectl apply examples/retail/manifests"
"$lakectl" apply "$m"
echo
echo "\$ lakectl query 'select region, count(*) orders, sum(qty * price) revenue from sales.orders group by region order by revenue desc'"
"$lakectl" query "select region, count(*) orders, sum(qty * price) revenue from sales.orders group by region order by revenue desc" --manifests "$m"
echo
echo "\$ lakectl query 'select id, name, signed_up from sales.customers order by id'   # upserted by id"
"$lakectl" query "select id, name, signed_up from sales.customers order by id" --manifests "$m"
echo
echo "\$ lakectl check examples/retail/manifests   # the declared checks, on main"
"$lakectl" check "$m"
echo
echo "\$ lakectl history sales.orders"
"$lakectl" history sales.orders --manifests "$m"
echo
echo "\$ lakectl rollback sales.orders --steps 1 --dry-run   # what undoing the last change would do"
"$lakectl" rollback sales.orders --steps 1 --dry-run --manifests "$m"
echo
echo "\$ lakectl plan examples/retail/manifests   # nothing left to do"
"$lakectl" plan "$m"
