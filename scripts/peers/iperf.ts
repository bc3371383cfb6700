/** iperf3 between two network namespaces, for the peer benchmarks. */
import { type ChildProcess, spawn } from "node:child_process";
import { run } from "./host.js";

/** Waits until something listens on TCP `port` in the namespace at `ns`. */
async function listening(ns: string, port: number): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const r = await run("nsenter", [`--net=${ns}`, "--", "ss", "-Hltn", `sport = :${port}`]);
    if (r.stdout.trim() !== "") return;
    await new Promise((res) => setTimeout(res, 50));
  }
  throw new Error(`nothing listens on ${port}`);
}

/** One iperf3 test: a one-off server in `serverNs`, the client in `clientNs`; Gbit/s received. */
export async function iperf(
  serverNs: string,
  clientNs: string,
  target: string,
  port: number,
  secs: number,
): Promise<number> {
  let server: ChildProcess | undefined;
  try {
    server = spawn("nsenter", [`--net=${serverNs}`, "--", "iperf3", "-s", "-1", "-p", "5201"], {
      stdio: "ignore",
    });
    await listening(serverNs, 5201);
    const r = await run(
      "nsenter",
      [`--net=${clientNs}`, "--", "iperf3", "-c", target, "-p", String(port), "-t", String(secs), "-J"],
      {
        timeoutMs: (secs + 30) * 1000,
      },
    );
    if (r.status !== 0 || r.stdout.trim() === "")
      throw new Error(
        `iperf3 -c ${target}:${port} exited ${r.status}: ${r.stderr.trim() || r.stdout.trim()}`,
      );
    const out = JSON.parse(r.stdout) as {
      end?: { sum_received?: { bits_per_second: number } };
      error?: string;
    };
    const bps = out.end?.sum_received?.bits_per_second;
    if (!bps) throw new Error(`iperf3: ${out.error ?? r.stderr}`);
    return bps / 1e9;
  } finally {
    server?.kill("SIGKILL");
  }
}
