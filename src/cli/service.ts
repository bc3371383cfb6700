import type { Command } from "commander";
import type { Client, Service, ServicePortConfig, ServiceSpec, Task } from "../client/client.js";
import { clientOf, collect, forEachName, print, printItems } from "./common.js";
import { imageExists } from "./containers.js";
import { UsageError } from "./errors.js";
import { ellipsis, formatList, humanDuration, naturalCompare, shortId } from "./format.js";
import { looksLikeImage } from "./reference.js";
import { parseKeyValues } from "./requests.js";
import { parseTemplate } from "./template.js";

const SERVICE_TABLE = "table {{.ID}}\t{{.Name}}\t{{.Mode}}\t{{.Replicas}}\t{{.Image}}\t{{.Ports}}";
const SERVICE_HEADERS = {
  ID: "ID",
  Name: "NAME",
  Mode: "MODE",
  Replicas: "REPLICAS",
  Image: "IMAGE",
  Ports: "PORTS",
};
const TASK_TABLE =
  "table {{.ID}}\t{{.Name}}\t{{.Image}}\t{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}\t{{.Ports}}";
const TASK_HEADERS = {
  ID: "ID",
  Name: "NAME",
  Image: "IMAGE",
  Node: "NODE",
  DesiredState: "DESIRED STATE",
  CurrentState: "CURRENT STATE",
  Error: "ERROR",
  Ports: "PORTS",
};
/** docker's task table cuts errors to this many characters unless --no-trunc. */
const MAX_ERROR = 30;

/**
 * `--publish`'s two forms, as docker's: `[PUBLISHED:]TARGET[/PROTO]`, or the long
 * `[mode=ingress|host,]published=P,target=T[,protocol=tcp|udp]`. A port published as 0 (or left
 * out) is chosen by the daemon.
 */
export function parsePublish(spec: string): ServicePortConfig {
  if (spec.includes("=")) {
    const fields = parseKeyValues(spec.split(","));
    const allowed = new Set(["mode", "published", "target", "protocol"]);
    const unknown = Object.keys(fields).find((k) => !allowed.has(k));
    if (unknown) throw new UsageError(`invalid field key ${unknown} in --publish ${spec}`);
    const mode = fields.mode ?? "ingress";
    if (mode !== "ingress" && mode !== "host")
      throw new UsageError(`invalid publish mode ${mode}: use ingress or host`);
    const protocol = fields.protocol ?? "tcp";
    if (protocol !== "tcp" && protocol !== "udp")
      throw new UsageError(`invalid protocol ${protocol}: use tcp or udp`);
    if (fields.target === undefined) throw new UsageError(`missing target in --publish ${spec}`);
    return {
      Protocol: protocol,
      TargetPort: portNumber(fields.target, spec),
      PublishedPort: fields.published === undefined ? 0 : portNumber(fields.published, spec),
      PublishMode: mode,
    };
  }
  const m = /^(?:(\d+):)?(\d+)(?:\/(tcp|udp))?$/.exec(spec);
  if (!m)
    throw new UsageError(`invalid --publish ${spec}: use PUBLISHED:TARGET[/tcp|udp] or published=P,target=T`);
  return {
    Protocol: (m[3] ?? "tcp") as "tcp" | "udp",
    TargetPort: portNumber(m[2] as string, spec),
    PublishedPort: m[1] === undefined ? 0 : portNumber(m[1], spec),
    PublishMode: "ingress",
  };
}

function portNumber(text: string, spec: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > 65535) throw new UsageError(`invalid port ${text} in --publish ${spec}`);
  return n;
}

function replicaCount(text: string): number {
  if (!/^\d+$/.test(text)) throw new UsageError(`invalid replicas value ${text}: a number is needed`);
  return Number(text);
}

const title = (s: string) => (s ? s[0]?.toUpperCase() + s.slice(1) : "");

const portsText = (ports: ServicePortConfig[] | undefined, mode: "ingress" | "host") =>
  (ports ?? [])
    .filter((p) => (p.PublishMode ?? "ingress") === mode)
    .map((p) => `*:${p.PublishedPort}->${p.TargetPort}/${p.Protocol ?? "tcp"}`)
    .join(", ");

export function serviceRow(s: Service, noTrunc: boolean): Record<string, string> {
  const status = s.ServiceStatus;
  return {
    ID: noTrunc ? s.ID : shortId(s.ID),
    Image: s.Spec.TaskTemplate?.ContainerSpec?.Image || "<none>",
    Mode: "replicated",
    Name: s.Spec.Name ?? "",
    Ports: portsText(s.Endpoint?.Ports, "ingress"),
    Replicas: `${status?.RunningTasks ?? 0}/${status?.DesiredTasks ?? s.Spec.Mode?.Replicated?.Replicas ?? 0}`,
  };
}

export function taskRow(t: Task, serviceName: string, noTrunc: boolean, now: number): Record<string, string> {
  const state = t.Status?.State ?? "";
  const since = t.Status?.Timestamp ? `${humanDuration(now - Date.parse(t.Status.Timestamp))} ago` : "";
  const err = t.Status?.Err ?? "";
  return {
    CurrentState: `${title(state)} ${since}`.trim(),
    DesiredState: title(t.DesiredState ?? ""),
    Error: err ? `"${noTrunc ? err : ellipsis(err, MAX_ERROR)}"` : "",
    ID: noTrunc ? t.ID : shortId(t.ID),
    Image: t.Spec?.ContainerSpec?.Image || "<none>",
    Name: `${serviceName}.${t.Slot ?? 0}`,
    Node: t.NodeID ?? "",
    Ports: portsText(t.Status?.PortStatus?.Ports, "host"),
  };
}

async function changeReplicas(client: Client, ref: string, replicas: number): Promise<Service> {
  const s = await client.serviceInspect(ref);
  const spec: ServiceSpec = { ...s.Spec, Mode: { Replicated: { Replicas: replicas } } };
  await client.serviceUpdate(s.ID, s.Version?.Index ?? 0, spec);
  return s;
}

export function registerService(program: Command): void {
  const service = program.command("service").description("Manage services of the cluster");

  service
    .command("create")
    .description("Create a service, from an image or running COMMAND on each host's filesystem")
    .usage("[OPTIONS] [IMAGE] [--] COMMAND [ARG...]")
    .argument("[command...]", "an image the daemon has (then its CMD is the default), or the command")
    .passThroughOptions()
    .option("--name <NAME>", "service name")
    .option("--replicas <N>", "number of tasks", "1")
    .option("--network <NETWORK>", "network to attach the tasks to (repeatable)", collect)
    .option("--endpoint-mode <MODE>", "vip (a virtual IP) or dnsrr (DNS round robin)", "vip")
    .option(
      "-p, --publish <SPEC>",
      "publish a port: [PUBLISHED:]TARGET[/PROTO] or [mode=ingress|host,]published=P,target=T[,protocol=tcp|udp]",
      collect,
    )
    .option("-e, --env <KEY=VALUE>", "set environment variables", collect)
    .option("--label <KEY=VALUE>", "service labels", collect)
    .option("--image <IMAGE>", "run from IMAGE, taking every argument as the command")
    .action(async (args: string[], opts, cmd: Command) => {
      const client = clientOf(cmd);
      const endpointMode = opts.endpointMode as string;
      if (endpointMode !== "vip" && endpointMode !== "dnsrr")
        throw new UsageError(`invalid endpoint mode ${endpointMode}: use vip or dnsrr`);
      let image: string = opts.image ?? "";
      let command = args;
      const [first] = args;
      if (!image && first !== undefined && looksLikeImage(first) && (await imageExists(client, first))) {
        image = first;
        command = args.slice(1);
      }
      const ports = ((opts.publish as string[] | undefined) ?? []).map(parsePublish);
      const spec: ServiceSpec = {
        Name: opts.name ?? "",
        Labels: parseKeyValues(opts.label),
        TaskTemplate: {
          ContainerSpec: {
            Image: image,
            ...(command.length > 0 ? { Args: command } : {}),
            ...(opts.env ? { Env: opts.env as string[] } : {}),
          },
          ...(opts.network ? { Networks: (opts.network as string[]).map((Target) => ({ Target })) } : {}),
        },
        Mode: { Replicated: { Replicas: replicaCount(opts.replicas) } },
        EndpointSpec: { Mode: endpointMode, ...(ports.length > 0 ? { Ports: ports } : {}) },
      };
      const res = await client.serviceCreate(spec);
      for (const w of res.Warnings ?? []) process.stderr.write(`WARNING: ${w}\n`);
      print(res.ID);
    });

  service
    .command("ls")
    .alias("list")
    .description("List services")
    .option("-q, --quiet", "only display IDs")
    .option("--format <FORMAT>", "table, json, or a Go template")
    .action(async (opts, cmd: Command) => {
      const list = await clientOf(cmd).serviceList({ status: true });
      list.sort((a, b) => naturalCompare(a.Spec.Name ?? "", b.Spec.Name ?? ""));
      const rows = list.map((s) => serviceRow(s, false));
      process.stdout.write(
        formatList(rows, opts.quiet ? "{{.ID}}" : opts.format, SERVICE_TABLE, SERVICE_HEADERS),
      );
    });

  service
    .command("ps")
    .description("List the tasks of one or more services")
    .argument("<service...>")
    .option("-q, --quiet", "only display task IDs")
    .option("--no-trunc", "do not truncate output")
    .option("--format <FORMAT>", "table, json, or a Go template")
    .action(async (names: string[], opts, cmd: Command) => {
      const client = clientOf(cmd);
      const rows: Record<string, string>[] = [];
      await forEachName(names, async (name) => {
        const s = await client.serviceInspect(name);
        const tasks = await client.taskList({ service: [s.ID] });
        for (const t of tasks) rows.push(taskRow(t, s.Spec.Name ?? s.ID, opts.trunc === false, Date.now()));
      });
      rows.sort((a, b) => naturalCompare(a.Name ?? "", b.Name ?? ""));
      const format = opts.quiet ? "{{.ID}}" : opts.format;
      process.stdout.write(formatList(rows, format, TASK_TABLE, TASK_HEADERS));
    });

  service
    .command("inspect")
    .description("Display detailed information on one or more services")
    .argument("<service...>")
    .option("-f, --format <TEMPLATE>", "format output using a Go template")
    .action(async (names: string[], opts, cmd: Command) => {
      const client = clientOf(cmd);
      const tmpl = opts.format ? parseTemplate(opts.format) : undefined;
      const found: Service[] = [];
      await forEachName(names, async (name) => {
        found.push(await client.serviceInspect(name));
      });
      printItems(found, tmpl);
    });

  service
    .command("scale")
    .description("Scale one or more services: SERVICE=REPLICAS")
    .argument("<service=replicas...>")
    .action(async (pairs: string[], _opts, cmd: Command) => {
      const client = clientOf(cmd);
      await forEachName(pairs, async (pair) => {
        const eq = pair.indexOf("=");
        if (eq <= 0) throw new UsageError(`invalid scale specifier '${pair}': use SERVICE=REPLICAS`);
        const name = pair.slice(0, eq);
        const replicas = replicaCount(pair.slice(eq + 1));
        await changeReplicas(client, name, replicas);
        print(`${name} scaled to ${replicas}`);
      });
    });

  service
    .command("update")
    .description("Update a service (its replica count)")
    .argument("<service>")
    .requiredOption("--replicas <N>", "number of tasks")
    .action(async (name: string, opts, cmd: Command) => {
      await changeReplicas(clientOf(cmd), name, replicaCount(opts.replicas));
      print(name);
    });

  service
    .command("rm")
    .alias("remove")
    .description("Remove one or more services")
    .argument("<service...>")
    .action(async (names: string[], _opts, cmd: Command) => {
      const client = clientOf(cmd);
      await forEachName(names, async (name) => {
        await client.serviceRemove(name);
        print(name);
      });
    });
}
