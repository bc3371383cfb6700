import { chmodSync, mkdirSync, rmSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { dirname } from "node:path";
import type { Engine } from "../engine/engine.js";
import { ConflictError, CtnetError, InvalidParameterError } from "../errors.js";
import { log } from "../log.js";
import { UpgradeRoutes } from "./hijack.js";
import { Router, readJsonBody, sendJson } from "./router.js";
import { clusterRoutes } from "./routes/cluster.js";
import { containerRoutes } from "./routes/containers.js";
import { execRoutes } from "./routes/exec.js";
import { imageRoutes } from "./routes/images.js";
import { networkRoutes } from "./routes/networks.js";
import { serviceRoutes } from "./routes/services.js";
import { systemRoutes } from "./routes/system.js";
import { API_VERSION, CTNET_VERSION } from "./version.js";

export function buildRouter(engine: Engine, upgrades = new UpgradeRoutes()): Router {
  const router = new Router();
  systemRoutes(router, engine);
  networkRoutes(router, engine);
  clusterRoutes(router, engine);
  serviceRoutes(router, engine);
  containerRoutes(router, upgrades, engine);
  execRoutes(router, upgrades, {
    containerPid: (ref) => {
      const c = engine.containers.find(ref);
      if (c.state.status !== "running") throw new ConflictError(`container ${c.id} is not running`);
      return { id: c.id, pid: c.state.pid };
    },
  });
  imageRoutes(router, engine.images, {
    inUse: (imageId) => engine.containers.list().find((c) => c.imageId === imageId)?.id,
  });
  return router;
}

/** The one place where errors become HTTP answers: typed errors carry their status. */
function sendError(res: ServerResponse, err: unknown): void {
  const status = err instanceof CtnetError ? err.status : 500;
  const message = err instanceof Error ? err.message : String(err);
  if (status >= 500) log.error({ err }, "request failed");
  if (res.headersSent) {
    res.end();
    return;
  }
  sendJson(res, status, { message });
}

export function handler(router: Router) {
  return async (req: IncomingMessage, res: ServerResponse) => {
    res.setHeader("Server", `ctnet/${CTNET_VERSION} (linux)`);
    res.setHeader("Api-Version", API_VERSION);
    const method = req.method ?? "GET";
    const started = process.hrtime.bigint();
    try {
      const m = router.match(method, req.url ?? "/");
      if (!m.handler || !m.request) {
        if (m.allowed.length > 0) {
          res.setHeader("Allow", m.allowed.join(", "));
          sendJson(res, 405, { message: `method ${method} not allowed on ${req.url}` });
        } else {
          sendJson(res, 404, { message: `page not found: ${method} ${req.url}` });
        }
        return;
      }
      let body: Promise<unknown> | undefined;
      await m.handler({ ...m.request, raw: req, body: () => (body ??= readJsonBody(req)) }, res);
    } catch (err) {
      sendError(res, err);
    } finally {
      log.debug(
        { method, url: req.url, status: res.statusCode, ms: Number(process.hrtime.bigint() - started) / 1e6 },
        "request",
      );
    }
  };
}

/** Parses -H: unix:///path (default) or tcp://host:port. */
export function parseHost(host: string): { socketPath: string } | { host: string; port: number } {
  if (host.startsWith("unix://")) return { socketPath: host.slice("unix://".length) };
  const m = /^tcp:\/\/([^:]+):(\d+)$/.exec(host);
  if (m) return { host: m[1] as string, port: Number(m[2]) };
  throw new InvalidParameterError(`invalid host ${host}: use unix:///path or tcp://host:port`);
}

export async function listen(engine: Engine, host: string): Promise<Server> {
  const upgrades = new UpgradeRoutes();
  const server = createServer(handler(buildRouter(engine, upgrades)));
  // Hijacked connections (docker exec/attach) arrive as upgrade requests, not through the handler.
  server.on("upgrade", upgrades.listener);
  server.keepAliveTimeout = 30_000;
  const where = parseHost(host);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    if ("socketPath" in where) {
      mkdirSync(dirname(where.socketPath), { recursive: true });
      rmSync(where.socketPath, { force: true });
      server.listen(where.socketPath, () => {
        // Like Docker's socket: root and the socket's group may talk to the daemon.
        chmodSync(where.socketPath, 0o660);
        resolve();
      });
    } else {
      server.listen(where.port, where.host, resolve);
    }
  });
  return server;
}
