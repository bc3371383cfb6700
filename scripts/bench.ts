/**
 * ctnet's benchmarks (issue 2's figures): network create, container attach (network connect) and
 * detach, `run` of a container on a bridge network, and the cost per container while one network
 * fills with N containers. Each runs against a fresh daemon in its own host namespace, through the
 * API's unix socket, as a client would see it. Results go to bench-results/ctnet.json and a table
 * on stdout. Usage: npm run bench [-- --fill 1000 --rounds 50]
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { TestDaemon } from "../test/helpers/daemon.js";

const { values } = parseArgs({
  options: { fill: { type: "string", default: "1000" }, rounds: { type: "string", default: "50" } },
});
const FILL = Number(values.fill);
const ROUNDS = Number(values.rounds);

interface Stat {
  name: string;
  n: number;
  median: number;
  p99: number;
  mean: number;
}

function stat(name: string, samples: number[]): Stat {
  const s = [...samples].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? 0;
  const round = (x: number) => Math.round(x * 100) / 100;
  return {
    name,
    n: s.length,
    median: round(q(0.5)),
    p99: round(q(0.99)),
    mean: round(s.reduce((a, b) => a + b, 0) / s.length),
  };
}

async function timed(fn: () => Promise<{ status: number; text: string }>, expect: number): Promise<number> {
  const t = process.hrtime.bigint();
  const r = await fn();
  const ms = Number(process.hrtime.bigint() - t) / 1e6;
  if (r.status !== expect) throw new Error(`unexpected ${r.status}: ${r.text}`);
  return ms;
}

async function main(): Promise<void> {
  const d = await TestDaemon.start("bench");
  const results: Stat[] = [];
  try {
    const create: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      create.push(
        await timed(
          () =>
            d.api("POST", "/networks/create", {
              Name: `bn${i}`,
              IPAM: { Config: [{ Subnet: `10.200.${i}.0/24` }] },
            }),
          201,
        ),
      );
    }
    results.push(stat("network create", create));
    const remove: number[] = [];
    for (let i = 0; i < ROUNDS; i++) remove.push(await timed(() => d.api("DELETE", `/networks/bn${i}`), 204));
    results.push(stat("network rm", remove));

    await d.api("POST", "/networks/create", {
      Name: "bench",
      IPAM: { Config: [{ Subnet: "10.128.0.0/16" }] },
    });
    await d.api("POST", "/networks/create", {
      Name: "extra",
      IPAM: { Config: [{ Subnet: "10.129.0.0/16" }] },
    });

    const run: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      run.push(
        await timed(async () => {
          const c = await d.api("POST", `/containers/create?name=r${i}`, {
            Cmd: ["sleep", "1000"],
            HostConfig: { NetworkMode: "bench" },
          });
          if (c.status !== 201) return c;
          return d.api("POST", `/containers/r${i}/start`);
        }, 204),
      );
    }
    results.push(stat("run -d (create + start) on a bridge", run));

    const connect: number[] = [];
    const disconnect: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      connect.push(await timed(() => d.api("POST", "/networks/extra/connect", { Container: `r${i}` }), 200));
      disconnect.push(
        await timed(() => d.api("POST", "/networks/extra/disconnect", { Container: `r${i}` }), 200),
      );
    }
    results.push(stat("network connect (attach)", connect));
    results.push(stat("network disconnect (detach)", disconnect));

    const rm: number[] = [];
    for (let i = 0; i < ROUNDS; i++)
      rm.push(await timed(() => d.api("DELETE", `/containers/r${i}?force=1`), 204));
    results.push(stat("rm -f of a running container", rm));

    const fill: number[] = [];
    for (let i = 0; i < FILL; i++) {
      fill.push(
        await timed(async () => {
          const c = await d.api("POST", `/containers/create?name=f${i}`, {
            Cmd: ["sleep", "1000"],
            HostConfig: { NetworkMode: "bench" },
          });
          if (c.status !== 201) return c;
          return d.api("POST", `/containers/f${i}/start`);
        }, 204),
      );
    }
    const decile = Math.max(1, Math.floor(FILL / 10));
    for (let k = 0; k < FILL; k += decile)
      results.push(
        stat(`fill: containers ${k + 1}-${Math.min(FILL, k + decile)}`, fill.slice(k, k + decile)),
      );
    for (let i = 0; i < FILL; i++) await d.api("DELETE", `/containers/f${i}?force=1`);
  } finally {
    await d.destroy();
  }
  mkdirSync("bench-results", { recursive: true });
  writeFileSync(
    "bench-results/ctnet.json",
    `${JSON.stringify({ date: new Date().toISOString(), fill: FILL, rounds: ROUNDS, results }, null, 2)}\n`,
  );
  console.log("| operation | n | median ms | p99 ms | mean ms |\n|---|---|---|---|---|");
  for (const r of results) console.log(`| ${r.name} | ${r.n} | ${r.median} | ${r.p99} | ${r.mean} |`);
}

await main();
