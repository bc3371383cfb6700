import { createInterface } from "node:readline/promises";
import type { Command } from "commander";
import type { EndpointSettings, Network } from "../client/client.js";
import { clientOf, collect, forEachName, print, printItems } from "./common.js";
import { formatList, NETWORK_HEADERS, NETWORK_TABLE, networkRow } from "./format.js";
import { networkCreateBody, parseFilters } from "./requests.js";
import { parseTemplate } from "./template.js";

export function registerNetwork(program: Command): void {
  const network = program.command("network").description("Manage networks");

  network
    .command("create")
    .description("Create a network")
    .argument("<name>")
    .option("-d, --driver <DRIVER>", "driver to manage the network", "bridge")
    .option("--subnet <CIDR>", "subnet in CIDR format that represents a network segment", collect)
    .option("--ip-range <CIDR>", "allocate container IPs from a sub-range", collect)
    .option("--gateway <IP>", "IPv4 or IPv6 gateway for the master subnet", collect)
    .option("--aux-address <NAME=IP>", "auxiliary IP addresses used by the network driver", collect)
    .option("--ipam-driver <DRIVER>", "IP address management driver", "default")
    .option("--ipam-opt <KEY=VALUE>", "set IPAM driver specific options", collect)
    .option("--ipv6", "enable IPv6 networking")
    .option("--internal", "restrict external access to the network")
    .option("--attachable", "enable manual container attachment")
    .option("-o, --opt <KEY=VALUE>", "set driver specific options", collect)
    .option("--label <KEY=VALUE>", "set metadata on a network", collect)
    .action(async (name: string, opts, cmd: Command) => {
      const body = networkCreateBody({ name, ...opts });
      const res = await clientOf(cmd).networkCreate(body);
      if (res.Warning) process.stderr.write(`WARNING: ${res.Warning}\n`);
      print(res.Id);
    });

  network
    .command("ls")
    .alias("list")
    .description("List networks")
    .option("-f, --filter <FILTER>", "provide filter values (e.g. driver=bridge)", collect)
    .option("-q, --quiet", "only display network IDs")
    .option("--no-trunc", "do not truncate the output")
    .option(
      "--format <FORMAT>",
      "format output using a custom template: 'table', 'table TEMPLATE', 'json', or TEMPLATE",
    )
    .action(async (opts, cmd: Command) => {
      const networks = await clientOf(cmd).networkList(parseFilters(opts.filter));
      networks.sort((a, b) => a.Name.localeCompare(b.Name));
      const rows = networks.map((n) => networkRow(n, opts.trunc === false));
      const format = opts.quiet ? "{{.ID}}" : opts.format;
      process.stdout.write(formatList(rows, format, NETWORK_TABLE, NETWORK_HEADERS));
    });

  network
    .command("inspect")
    .description("Display detailed information on one or more networks")
    .argument("<network...>")
    .option("-f, --format <TEMPLATE>", "format output using a Go template")
    .option("-v, --verbose", "verbose output for diagnostics")
    .action(async (names: string[], opts, cmd: Command) => {
      const client = clientOf(cmd);
      const tmpl = opts.format ? parseTemplate(opts.format) : undefined;
      const found: Network[] = [];
      await forEachName(names, async (name) => {
        found.push(await client.networkInspect(name, { verbose: opts.verbose }));
      });
      printItems(found, tmpl);
    });

  network
    .command("rm")
    .alias("remove")
    .description("Remove one or more networks")
    .argument("<network...>")
    .option("-f, --force", "do not error if the network does not exist")
    .action(async (names: string[], opts, cmd: Command) => {
      const client = clientOf(cmd);
      await forEachName(names, async (name) => {
        try {
          await client.networkRemove(name);
        } catch (err) {
          if (opts.force && (err as { status?: number }).status === 404) return;
          throw err;
        }
        print(name);
      });
    });

  network
    .command("prune")
    .description("Remove all unused networks")
    .option("-f, --force", "do not prompt for confirmation")
    .option("--filter <FILTER>", "provide filter values (e.g. until=<timestamp>)", collect)
    .action(async (opts, cmd: Command) => {
      const warning = "WARNING! This will remove all custom networks not used by at least one container.";
      if (!opts.force && !(await confirm(`${warning}\nAre you sure you want to continue? [y/N] `))) return;
      const res = await clientOf(cmd).networkPrune(parseFilters(opts.filter));
      const deleted = res.NetworksDeleted ?? [];
      if (deleted.length > 0) print(`Deleted Networks:\n${deleted.join("\n")}`);
    });

  network
    .command("connect")
    .description("Connect a container to a network")
    .argument("<network>")
    .argument("<container>")
    .option("--ip <IP>", "IPv4 address (e.g. 172.30.100.104)")
    .option("--ip6 <IP>", "IPv6 address (e.g. 2001:db8::33)")
    .option("--alias <NAME>", "add network-scoped alias for the container", collect)
    .action(async (net: string, container: string, opts, cmd: Command) => {
      const endpoint: EndpointSettings = {};
      if (opts.ip || opts.ip6) {
        endpoint.IPAMConfig = {
          ...(opts.ip ? { IPv4Address: opts.ip } : {}),
          ...(opts.ip6 ? { IPv6Address: opts.ip6 } : {}),
        };
      }
      if (opts.alias) endpoint.Aliases = opts.alias;
      await clientOf(cmd).networkConnect(net, { Container: container, EndpointConfig: endpoint });
    });

  network
    .command("disconnect")
    .description("Disconnect a container from a network")
    .argument("<network>")
    .argument("<container>")
    .option("-f, --force", "force the container to disconnect from a network")
    .action(async (net: string, container: string, opts, cmd: Command) => {
      await clientOf(cmd).networkDisconnect(net, { Container: container, Force: opts.force ?? false });
    });
}

async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stdout });
  // End of input (stdin closed or not a terminal with nothing to read) means "no".
  const closed = new Promise<string>((resolve) => rl.once("close", () => resolve("")));
  try {
    const answer = await Promise.race([rl.question(question), closed]);
    return /^y(es)?$/i.test(answer.trim());
  } finally {
    rl.close();
  }
}
