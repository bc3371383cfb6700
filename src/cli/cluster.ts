import type { Command } from "commander";
import { clientOf, print } from "./common.js";
import { formatList } from "./format.js";

const HOST_TABLE = "table {{.Name}}\t{{.Address}}\t{{.Role}}\t{{.State}}";
const HOST_HEADERS = { Name: "HOST", Address: "ADDRESS", Role: "ROLE", State: "STATE" };

export function registerCluster(program: Command): void {
  const cluster = program
    .command("cluster")
    .description("Form and manage a cluster of ctnet hosts (on etcd)");

  cluster
    .command("init")
    .description("Make this host the first member of a new cluster, running an etcd member")
    .option("--advertise-addr <IP>", "this host's address for the other hosts (default: its only address)")
    .action(async (opts: { advertiseAddr?: string }, cmd: Command) => {
      const r = await clientOf(cmd).clusterInit(
        opts.advertiseAddr ? { AdvertiseAddr: opts.advertiseAddr } : {},
      );
      print(
        `This host (${r.NodeName}) now runs a cluster.\nTo add a host to it, run on that host:\n\n    ctnet cluster join ${r.Addr}\n`,
      );
    });

  cluster
    .command("join")
    .description("Join the cluster of which ADDR (HOST:PORT of its etcd) is a member")
    .argument("<ADDR>", "client address of a member's etcd, e.g. 10.0.0.1:2379")
    .option("--advertise-addr <IP>", "this host's address for the other hosts (default: its only address)")
    .option("--member", "also run an etcd member on this host (default: etcd client only)")
    .action(async (addr: string, opts: { advertiseAddr?: string; member?: boolean }, cmd: Command) => {
      await clientOf(cmd).clusterJoin({
        Addr: addr,
        ...(opts.advertiseAddr ? { AdvertiseAddr: opts.advertiseAddr } : {}),
        Member: opts.member === true,
      });
      print("This host joined the cluster.");
    });

  cluster
    .command("ls")
    .description("List the hosts of the cluster and their state")
    .option("--format <FORMAT>", "table, json, or a Go template")
    .action(async (opts: { format?: string }, cmd: Command) => {
      const info = await clientOf(cmd).clusterInfo();
      if (info.Role === "none") {
        print("This host is not in a cluster.");
        return;
      }
      const rows = info.Hosts.map((h) => ({
        Name: h.Self ? `${h.Name} *` : h.Name,
        Address: h.Addr,
        Role: h.Role,
        State: h.State,
      }));
      process.stdout.write(formatList(rows, opts.format, HOST_TABLE, HOST_HEADERS));
    });

  cluster
    .command("leave")
    .description("Leave the cluster (this host's containers must be off global networks)")
    .action(async (_opts, cmd: Command) => {
      await clientOf(cmd).clusterLeave();
      print("This host left the cluster.");
    });
}
