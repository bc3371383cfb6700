import { cpus, hostname, release, totalmem } from "node:os";
import type { Engine } from "../../engine/engine.js";
import type { EngineEvent } from "../../engine/events.js";
import { type Router, sendJson } from "../router.js";
import { API_VERSION, CTNET_VERSION, MIN_API_VERSION } from "../version.js";

export function systemRoutes(router: Router, engine: Engine): void {
  const ping = (_req: unknown, res: import("node:http").ServerResponse) => {
    res.writeHead(200, {
      "Content-Type": "text/plain; charset=utf-8",
      "Cache-Control": "no-cache, no-store, must-revalidate",
      Pragma: "no-cache",
      "Docker-Experimental": "false",
      Ostype: "linux",
      "Content-Length": 2,
    });
    res.end("OK");
  };
  router.on("GET", "/_ping", ping).on("HEAD", "/_ping", ping);

  router.on("GET", "/version", (_req, res) => {
    sendJson(res, 200, {
      Platform: { Name: "ctnet" },
      Components: [
        {
          Name: "Engine",
          Version: CTNET_VERSION,
          Details: {
            ApiVersion: API_VERSION,
            MinAPIVersion: MIN_API_VERSION,
            Os: "linux",
            Arch: arch(),
            KernelVersion: release(),
          },
        },
      ],
      Version: CTNET_VERSION,
      ApiVersion: API_VERSION,
      MinAPIVersion: MIN_API_VERSION,
      GitCommit: "",
      GoVersion: `node ${process.version}`,
      Os: "linux",
      Arch: arch(),
      KernelVersion: release(),
      BuildTime: "",
    });
  });

  router.on("GET", "/info", (_req, res) => {
    const all = engine.containers.list();
    const running = all.filter((c) => c.state.status === "running").length;
    sendJson(res, 200, {
      ID: "",
      Containers: all.length,
      ContainersRunning: running,
      ContainersPaused: 0,
      ContainersStopped: all.length - running,
      Images: engine.images.list().length,
      Driver: "ctnet",
      Name: hostname(),
      ServerVersion: CTNET_VERSION,
      OperatingSystem: "ctnet container networking engine",
      OSType: "linux",
      Architecture: process.arch === "x64" ? "x86_64" : process.arch,
      KernelVersion: release(),
      NCPU: cpus().length,
      MemTotal: totalmem(),
      DockerRootDir: engine.ctx.paths.dataRoot,
      Plugins: { Network: [...engine.ctx.drivers.keys()], Volume: [], Log: ["file"], Authorization: null },
      SecurityOptions: [],
      Warnings: [],
      Swarm: {
        LocalNodeState: "inactive",
        NodeID: "",
        NodeAddr: "",
        ControlAvailable: false,
        Error: "",
        RemoteManagers: null,
      },
      Runtimes: {},
      DefaultRuntime: "ctnet",
      LiveRestoreEnabled: true,
    });
  });

  router.on("GET", "/events", (req, res) => {
    res.writeHead(200, { "Content-Type": "application/json" });
    res.flushHeaders();
    const send = (e: EngineEvent) =>
      res.write(`${JSON.stringify({ ...e, status: e.Action, id: e.Actor.ID, from: "" })}\n`);
    engine.ctx.events.on("event", send);
    const until = Number(req.query.get("until"));
    const timer = until > 0 ? setTimeout(() => res.end(), Math.max(0, until * 1000 - Date.now())) : undefined;
    req.raw.on("close", () => {
      engine.ctx.events.off("event", send);
      if (timer) clearTimeout(timer);
    });
  });
}

function arch(): string {
  return process.arch === "x64" ? "amd64" : process.arch;
}
