import type { Command } from "commander";
import { describeLab, labDown, labExec, labMachine, labStart, labStop, labUp } from "../lab/lab.js";
import { DEFAULT_LAB, listLabs, loadLab } from "../lab/state.js";
import { print } from "./common.js";
import { UsageError } from "./errors.js";
import { alignTable } from "./format.js";

/** `--name X` as a user would add it to the next command; nothing for the default lab. */
const nameFlag = (name: string) => (name === DEFAULT_LAB ? "" : ` --name ${name}`);

function wholeNumber(flag: string) {
  return (value: string) => {
    if (!/^\d+$/.test(value))
      throw new UsageError(`${flag} needs a whole number, got ${JSON.stringify(value)}`);
    return Number(value);
  };
}

function formatTable(headers: string[], rows: string[][]): string {
  return `${alignTable([headers, ...rows].map((r) => r.join("\t")))}\n`;
}

/**
 * `ctnet lab`: several ctnet hosts on this machine, each a network namespace with its own daemon,
 * joined by an underlay bridge (src/lab/).
 */
export function registerLab(program: Command): void {
  const lab = program
    .command("lab")
    .description("Build a lab of ctnet hosts on this machine (network namespaces on an underlay bridge)")
    // So that `lab exec HOST COMMAND…` can leave the command's own options alone.
    .enablePositionalOptions();

  lab
    .command("up")
    .description("Create a lab of N hosts, start a daemon on each and form a cluster")
    .requiredOption("--hosts <N>", "number of hosts (host1 … hostN)", wholeNumber("--hosts"))
    .option("--name <LAB>", "name of the lab", DEFAULT_LAB)
    .option(
      "--members <K>",
      "hosts 1..K run an etcd member, the others join as clients",
      wholeNumber("--members"),
      1,
    )
    .option("--no-cluster", "start the daemons without forming a cluster")
    .option("--log-level <LEVEL>", "log level of the daemons", "info")
    .action(async (opts) => {
      const l = await labUp({
        name: opts.name,
        hosts: opts.hosts,
        members: opts.members,
        cluster: opts.cluster,
        logLevel: opts.logLevel,
      });
      const flag = nameFlag(l.name);
      const lines = [
        `Lab ${l.name} is up: ${l.hosts.length} host${l.hosts.length === 1 ? "" : "s"} on ${l.subnet}, joined by the bridge "underlay" in network namespace ${l.netns} (${l.labAddr}).`,
      ];
      if (l.clusterAddr) {
        const members = opts.members > 1 ? `host1 … host${opts.members} run etcd members` : "host1 runs etcd";
        const clients = opts.members < l.hosts.length ? "; the other hosts joined as clients" : "";
        lines.push(`Cluster: ${members} (first at ${l.clusterAddr})${clients}.`);
      }
      lines.push(
        "",
        formatTable(
          ["HOST", "ADDRESS", "NETNS", "DAEMON"],
          l.hosts.map((h) => [h.name, h.addr, h.netns, `unix://${h.socket}`]),
        ).trimEnd(),
        "",
        `Run on a host:   ctnet lab exec${flag} host1 ctnet run -d --name web sleep 1d`,
        `                 ctnet lab exec${flag} host2 docker ps`,
        `                 ctnet lab exec${flag} host1 sh   (a shell on host1, with CTNET_HOST and DOCKER_HOST set)`,
        `Add a machine:   ctnet lab machine${flag} internet   (a plain namespace on the underlay)`,
        `Host failure:    ctnet lab stop${flag} host2   then   ctnet lab start${flag} host2`,
        `Daemon logs:     ${l.dataDir}/hostN.log`,
        `Remove the lab:  ctnet lab down${flag}`,
      );
      print(lines.join("\n"));
    });

  lab
    .command("down")
    .description("Remove a lab: containers, daemons, etcd members, namespaces, mounts and files")
    .option("--name <LAB>", "name of the lab", DEFAULT_LAB)
    .action(async (opts) => {
      for (const w of await labDown(opts.name)) process.stderr.write(`warning: ${w}\n`);
    });

  lab
    .command("ls")
    .alias("list")
    .description("List labs, their hosts and machines")
    .action(async () => {
      const rows: string[][] = [];
      for (const l of listLabs())
        for (const m of await describeLab(l))
          rows.push([l.name, m.name, m.kind, m.addr, m.status, m.socket ?? ""]);
      process.stdout.write(formatTable(["LAB", "NAME", "KIND", "ADDRESS", "STATE", "DAEMON"], rows));
    });

  lab
    .command("exec")
    .description("Run a command inside a lab host's (or machine's) network namespace, with CTNET_HOST set")
    .usage("[--name LAB] HOST COMMAND [ARG...]")
    .argument("<host>")
    .argument("<command...>")
    .passThroughOptions()
    .option("--name <LAB>", "name of the lab", DEFAULT_LAB)
    .action(async (host: string, command: string[], opts) => {
      process.exitCode = await labExec(loadLab(opts.name), host, command);
    });

  lab
    .command("stop")
    .description("Simulate a host failure: kill every process in the host's namespace and delete it")
    .argument("<host>")
    .option("--name <LAB>", "name of the lab", DEFAULT_LAB)
    .action(async (host: string, opts) => {
      await labStop(loadLab(opts.name), host);
    });

  lab
    .command("start")
    .description("Bring a stopped host back (same address); its daemon rejoins the cluster by itself")
    .argument("<host>")
    .option("--name <LAB>", "name of the lab", DEFAULT_LAB)
    .action(async (host: string, opts) => {
      await labStart(loadLab(opts.name), host);
    });

  lab
    .command("machine")
    .description("Add a plain namespace (a server or a client, no daemon) on the lab's underlay")
    .argument("<name>")
    .option("--name <LAB>", "name of the lab", DEFAULT_LAB)
    .action(async (name: string, opts) => {
      const m = labMachine(loadLab(opts.name), name);
      print(`${m.name} ${m.addr} (network namespace ${m.netns})`);
    });
}
