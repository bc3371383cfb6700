import type { Engine } from "../../engine/engine.js";
import type { NetworkRecord } from "../../engine/types.js";
import { applyFilters, matchesLabels, matchesPattern, parseFilters } from "../filters.js";
import { queryBool, type Router, sendEmpty, sendJson } from "../router.js";
import {
  networkConnectSchema,
  networkDisconnectSchema,
  parse,
  toEndpointRequest,
  toNetworkCreate,
} from "../schemas.js";
import { networkView } from "../views.js";

const NETWORK_FILTERS = ["dangling", "driver", "id", "label", "name", "scope", "type"] as const;

export function networkRoutes(router: Router, engine: Engine): void {
  const ctx = engine.ctx;
  const tests = {
    driver: (n: NetworkRecord, v: string) => n.driver === v,
    id: (n: NetworkRecord, v: string) => n.id.startsWith(v),
    name: (n: NetworkRecord, v: string) => matchesPattern(v, n.name),
    scope: (n: NetworkRecord, v: string) => n.scope === v,
    type: (n: NetworkRecord, v: string) =>
      v === "builtin" ? n.predefined : v === "custom" ? !n.predefined : false,
    dangling: (n: NetworkRecord, v: string) =>
      (ctx.endpointsOn(n.id).length === 0 && !n.predefined) === (v === "true" || v === "1"),
    label: (n: NetworkRecord, v: string) => matchesLabels([v], n.labels),
  };

  router.on("GET", "/networks", (req, res) => {
    const filters = parseFilters(req.query.get("filters"), NETWORK_FILTERS);
    const nets = applyFilters(engine.networks.list(), filters, tests);
    sendJson(
      res,
      200,
      nets.map((n) => networkView(ctx, n)),
    );
  });

  router.on("GET", "/networks/:id", (req, res) => {
    sendJson(res, 200, networkView(ctx, engine.networks.find(req.params.id ?? "")));
  });

  router.on("POST", "/networks/create", async (req, res) => {
    const net = await engine.networks.create(toNetworkCreate(await req.body()));
    sendJson(res, 201, { Id: net.id, Warning: "" });
  });

  router.on("DELETE", "/networks/:id", async (req, res) => {
    await engine.networks.remove(req.params.id ?? "");
    sendEmpty(res, 204);
  });

  router.on("POST", "/networks/prune", async (req, res) => {
    const filters = parseFilters(req.query.get("filters"), ["label", "label!", "until"]);
    const until = filters.get("until")?.[0];
    const cutoff = until ? untilToMillis(until) : Number.POSITIVE_INFINITY;
    const removed = await engine.networks.prune(
      (n) =>
        Date.parse(n.created) < cutoff &&
        matchesLabels(filters.get("label") ?? [], n.labels) &&
        !(filters.get("label!") ?? []).some((l) => matchesLabels([l], n.labels)),
    );
    sendJson(res, 200, { NetworksDeleted: removed });
  });

  router.on("POST", "/networks/:id/connect", async (req, res) => {
    const b = parse(networkConnectSchema, await req.body());
    await engine.containers.connect(req.params.id ?? "", b.Container, toEndpointRequest(b.EndpointConfig));
    sendEmpty(res, 200);
  });

  router.on("POST", "/networks/:id/disconnect", async (req, res) => {
    const b = parse(networkDisconnectSchema, await req.body());
    await engine.containers.disconnect(
      req.params.id ?? "",
      b.Container,
      b.Force || queryBool(req.query, "force"),
    );
    sendEmpty(res, 200);
  });
}

/** Docker's `until` filter: a unix timestamp, an RFC 3339 date or a duration like 10m / 2h. */
function untilToMillis(v: string): number {
  const d = /^(\d+)(s|m|h)$/.exec(v);
  if (d) return Date.now() - Number(d[1]) * { s: 1000, m: 60_000, h: 3_600_000 }[d[2] as "s" | "m" | "h"];
  if (/^\d+(\.\d+)?$/.test(v)) return Number(v) * 1000;
  return Date.parse(v);
}
