import type { Engine } from "../../engine/engine.js";
import { type Router, sendEmpty, sendJson } from "../router.js";
import { clusterInitSchema, clusterJoinSchema, parse } from "../schemas.js";

/** ctnet's own cluster endpoints (Docker has none for this: its swarm is another API). */
export function clusterRoutes(router: Router, engine: Engine): void {
  router.on("GET", "/ctnet/cluster", (_req, res) => {
    sendJson(res, 200, engine.cluster.info());
  });

  router.on("POST", "/ctnet/cluster/init", async (req, res) => {
    const b = parse(clusterInitSchema, (await req.body()) ?? {});
    sendJson(res, 200, await engine.cluster.init(b.AdvertiseAddr));
  });

  router.on("POST", "/ctnet/cluster/join", async (req, res) => {
    const b = parse(clusterJoinSchema, await req.body());
    await engine.cluster.join(b.Addr, b.AdvertiseAddr, b.Member);
    sendEmpty(res, 200);
  });

  router.on("POST", "/ctnet/cluster/leave", async (_req, res) => {
    await engine.cluster.leave();
    sendEmpty(res, 200);
  });
}
