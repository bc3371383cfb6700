import type { ServiceRecord, TaskRecord } from "../../cluster/types.js";
import type { Engine } from "../../engine/engine.js";
import { NotFoundError, NotSupportedError } from "../../errors.js";
import { applyFilters, matchesLabels, parseFilters } from "../filters.js";
import { queryBool, type Router, sendEmpty, sendJson } from "../router.js";
import { toServiceSpec, updateVersion } from "../service-schemas.js";
import { nodeView, serviceView, taskView } from "../service-views.js";

const SERVICE_FILTERS = ["id", "label", "mode", "name"] as const;
const TASK_FILTERS = ["desired-state", "id", "label", "name", "node", "service", "_up-to-date"] as const;
const NODE_FILTERS = ["id", "membership", "name", "role"] as const;

/** Docker's /services, /tasks and /nodes, over the cluster's services (swarm mode's API shapes). */
export function serviceRoutes(router: Router, engine: Engine): void {
  const ctx = engine.ctx;
  const services = engine.services;
  const serviceOf = (t: TaskRecord) => ctx.cluster?.services.get(t.serviceId);
  const serviceTests = {
    id: (s: ServiceRecord, v: string) => s.id.startsWith(v),
    name: (s: ServiceRecord, v: string) => s.name.startsWith(v),
    label: (s: ServiceRecord, v: string) => matchesLabels([v], s.labels),
    mode: (_s: ServiceRecord, v: string) => v === "replicated",
  };
  const taskTests = {
    "desired-state": (t: TaskRecord, v: string) =>
      t.desired === v || (v === "accepted" && t.desired === "running"),
    id: (t: TaskRecord, v: string) => t.id.startsWith(v),
    name: (t: TaskRecord, v: string) => `${serviceOf(t)?.name ?? t.serviceId}.${t.slot}`.startsWith(v),
    node: (t: TaskRecord, v: string) => t.host === v,
    service: (t: TaskRecord, v: string) => t.serviceId === v || serviceOf(t)?.name === v,
    label: () => false,
    "_up-to-date": () => true,
  };

  router.on("GET", "/services", (req, res) => {
    const filters = parseFilters(req.query.get("filters"), SERVICE_FILTERS);
    const withStatus = queryBool(req.query, "status");
    const list = applyFilters(services.list(), filters, serviceTests);
    sendJson(
      res,
      200,
      list.map((s) =>
        serviceView(
          ctx,
          s,
          withStatus ? { running: services.running(s.id), desired: s.replicas } : undefined,
        ),
      ),
    );
  });

  router.on("POST", "/services/create", async (req, res) => {
    const { service, warnings } = await services.create(toServiceSpec(await req.body()));
    sendJson(res, 201, { ID: service.id, ...(warnings.length > 0 ? { Warnings: warnings } : {}) });
  });

  router.on("GET", "/services/:id", (req, res) => {
    sendJson(res, 200, serviceView(ctx, services.find(req.params.id ?? "")));
  });

  router.on("DELETE", "/services/:id", async (req, res) => {
    await services.remove(req.params.id ?? "");
    sendEmpty(res, 200);
  });

  router.on("POST", "/services/:id/update", async (req, res) => {
    if (req.query.get("rollback"))
      throw new NotSupportedError("ctnet keeps no previous service spec to roll back to");
    const version = updateVersion(req.query.get("version"));
    await services.update(req.params.id ?? "", version, toServiceSpec(await req.body()));
    sendJson(res, 200, { Warnings: [] });
  });

  router.on("GET", "/services/:id/logs", () => {
    throw new NotSupportedError(
      "service logs are not supported by ctnet: read a task's with `logs` on its host",
    );
  });

  router.on("GET", "/tasks", (req, res) => {
    const filters = parseFilters(req.query.get("filters"), TASK_FILTERS);
    const list = applyFilters(services.tasks(), filters, taskTests);
    sendJson(
      res,
      200,
      list.map((t) => taskView(ctx, t, serviceOf(t), services.status(t.id))),
    );
  });

  router.on("GET", "/tasks/:id", (req, res) => {
    const t = services.findTask(req.params.id ?? "");
    sendJson(res, 200, taskView(ctx, t, serviceOf(t), services.status(t.id)));
  });

  const nodes = () => {
    services.requireCluster();
    const info = engine.cluster.info();
    return info.Hosts.map((h) => ({ host: h, view: nodeView(h, ctx.cluster?.leader ?? "") }));
  };

  router.on("GET", "/nodes", (req, res) => {
    const filters = parseFilters(req.query.get("filters"), NODE_FILTERS);
    const list = applyFilters(nodes(), filters, {
      id: (n, v) => n.host.Name.startsWith(v),
      name: (n, v) => n.host.Name === v,
      role: (n, v) => n.view.Spec.Role === v,
      membership: (_n, v) => v === "accepted",
    });
    sendJson(
      res,
      200,
      list.map((n) => n.view),
    );
  });

  router.on("GET", "/nodes/:id", (req, res) => {
    const ref = req.params.id ?? "";
    const found = nodes().find((n) => n.host.Name === ref);
    if (!found) throw new NotFoundError(`node ${ref} not found`);
    sendJson(res, 200, found.view);
  });
}
