/**
 * A stub upstream DNS server for tests, run as its own process (a test's event loop is often
 * blocked in spawnSync while a container queries). Answers A records from argv
 * ("name=1.2.3.4 …") and NXDOMAIN for everything else, on 127.0.0.1:53 of the namespace it runs in.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createSocket } from "node:dgram";
import { fileURLToPath } from "node:url";
import dnsPacket from "dns-packet";

export async function startDnsStub(nsPath: string, records: Record<string, string>): Promise<ChildProcess> {
  const args = Object.entries(records).map(([name, ip]) => `${name}=${ip}`);
  const child = spawn(
    "nsenter",
    [`--net=${nsPath}`, "--", process.execPath, "--import", "tsx", fileURLToPath(import.meta.url), ...args],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  await new Promise<void>((resolve, reject) => {
    child.once("exit", (code) => reject(new Error(`DNS stub exited (${code})`)));
    child.stdout?.once("data", () => resolve());
  });
  return child;
}

function serve(records: Map<string, string>): void {
  const sock = createSocket("udp4");
  sock.on("message", (msg, rinfo) => {
    const q = dnsPacket.decode(msg);
    const question = q.questions?.[0];
    const ip = question && question.type === "A" ? records.get(question.name) : undefined;
    const known = question !== undefined && records.has(question.name);
    const reply = dnsPacket.encode({
      id: q.id,
      type: "response",
      flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (known ? 0 : 3),
      questions: q.questions,
      answers: ip && question ? [{ type: "A", name: question.name, ttl: 60, data: ip }] : [],
    });
    sock.send(reply, rinfo.port, rinfo.address);
  });
  sock.bind(53, "127.0.0.1", () => process.stdout.write("ready\n"));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  serve(new Map(process.argv.slice(2).map((kv) => kv.split("=") as [string, string])));
}
