import { readFileSync } from "node:fs";
import type { Command } from "commander";
import { API_VERSION, resolveHost } from "../client/client.js";
import { clientOf, collect, print } from "./common.js";
import { describeError } from "./errors.js";

export function registerSystem(program: Command): void {
  program
    .command("daemon")
    .description("Run the ctnet daemon")
    .option("--data-root <DIR>", "root directory of persistent state", "/var/lib/ctnet")
    .option("--exec-root <DIR>", "root directory of runtime state", "/run/ctnet")
    .option(
      "-H, --host <HOST>",
      "socket to listen on (default: $CTNET_HOST, else unix:///run/ctnet/ctnet.sock)",
    )
    .option("--log-level <LEVEL>", "log level (debug, info, warn, error)", "info")
    .option("--dns <IP>", "DNS server for containers and the embedded resolver to forward to", collect)
    .option("--node-name <NAME>", "this host's name in a cluster (default: the machine's host name)")
    .option("--cluster-store <URL>", "follow the etcd at etcd://HOST:PORT for global networks")
    .option("--advertise-addr <IP>", "this host's address for the other hosts of a cluster")
    .action(async (opts, cmd: Command) => {
      // Loaded on demand: the daemon pulls in the kernel layer and its native addon, which no
      // client command should need.
      const { runDaemon } = await import("../daemon/main.js");
      await runDaemon({
        dataRoot: opts.dataRoot,
        execRoot: opts.execRoot,
        // The global `-H` (before `daemon`) and CTNET_HOST also count, so one setting serves
        // both the daemon and its clients.
        host: resolveHost(opts.host ?? cmd.parent?.opts<{ host?: string }>().host),
        logLevel: opts.logLevel,
        dns: opts.dns ?? [],
        nodeName: opts.nodeName,
        clusterStore: opts.clusterStore,
        advertiseAddr: opts.advertiseAddr,
      });
    });

  program
    .command("check-config")
    .description("Check which networking features the running kernel and machine support")
    .action(async () => {
      const { checkConfig } = await import("../kernel/features.js");
      const features = await checkConfig();
      const color = process.stdout.isTTY && !process.env.NO_COLOR;
      const paint = (code: number, s: string) => (color ? `\x1b[${code}m${s}\x1b[0m` : s);
      const groups = [
        { title: "Kernel features:", category: "kernel", yes: "enabled" },
        { title: "Tools:", category: "tool", yes: "found" },
      ] as const;
      const lines: string[] = [];
      for (const g of groups) {
        const members = features.filter((f) => f.category === g.category);
        if (members.length === 0) continue;
        if (lines.length > 0) lines.push("");
        lines.push(g.title);
        for (const f of members) {
          if (f.present) {
            lines.push(`- ${f.name}: ${paint(32, g.yes)}${f.detail ? ` (${f.detail})` : ""}`);
          } else {
            const needed = f.neededFor ? ` (needed for ${f.neededFor})` : "";
            lines.push(`- ${f.name}: ${paint(31, "missing")}${needed}${f.detail ? `: ${f.detail}` : ""}`);
          }
        }
      }
      print(lines.join("\n"));
    });

  program
    .command("version")
    .description("Show the ctnet version information")
    .action(async (_opts, cmd: Command) => {
      const client = clientOf(cmd);
      print(
        [
          "Client:",
          ` Version:      ${packageVersion()}`,
          ` API version:  ${API_VERSION}`,
          ` Node version: ${process.version}`,
          ` OS/Arch:      ${process.platform}/${process.arch}`,
          "",
        ].join("\n"),
      );
      try {
        const v = await client.version();
        print(
          [
            "Server:",
            ` Version:      ${v.Version ?? ""}`,
            ` API version:  ${v.ApiVersion ?? ""}${v.MinAPIVersion ? ` (minimum version ${v.MinAPIVersion})` : ""}`,
            ` OS/Arch:      ${v.Os ?? ""}/${v.Arch ?? ""}`,
            ` Kernel:       ${v.KernelVersion ?? ""}`,
          ].join("\n"),
        );
      } catch (err) {
        process.stderr.write(`${describeError(err)}\n`);
        process.exitCode = 1;
      }
    });
}

/** package.json sits two levels above both src/cli/ (under tsx) and dist/cli/ (built). */
function packageVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
      version?: string;
    };
    return pkg.version ?? "unknown";
  } catch {
    return "unknown";
  }
}
