import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { compareRuns, drift, medianInterval, ratioInterval } from "../../scripts/peers/compare.js";
import type { PeersResult } from "../../scripts/peers/report.js";
import type { Row } from "../../scripts/peers/workloads.js";

function run(date: string, samples: Row["samples"]): PeersResult {
  return {
    date,
    systems: [
      { id: "ctnet", label: "ctnet" },
      { id: "docker", label: "Docker" },
    ],
    rows: [{ group: "g", name: "run", unit: "ms", better: "lower", results: {}, samples }],
  } as unknown as PeersResult;
}

describe("rerun comparison of the peer benchmarks", () => {
  it("takes the range of a handful of samples as the median's interval", () => {
    assert.deepEqual(medianInterval([5, 1, 3]), { median: 3, lo: 1, hi: 5, n: 3 });
    assert.equal(medianInterval([]), undefined);
  });

  it("takes order statistics around the median from 6 samples on", () => {
    const xs = Array.from({ length: 100 }, (_, i) => i + 1);
    const i = medianInterval(xs);
    assert.ok(i);
    // ranks 50 ± 9.8 for n = 100: the interval is about 40..61
    assert.ok(i.lo >= 38 && i.lo <= 42, `lo ${i.lo}`);
    assert.ok(i.hi >= 59 && i.hi <= 63, `hi ${i.hi}`);
    assert.ok(i.lo <= i.median && i.median <= i.hi);
  });

  it("has no ratio for figures that can be zero or negative", () => {
    const a = { median: -3, lo: -5, hi: 1, n: 3 };
    const b = { median: 3, lo: 2, hi: 4, n: 3 };
    assert.equal(ratioInterval(a, b), undefined);
    assert.deepEqual(ratioInterval(b, b), { value: 1, lo: 0.5, hi: 2 });
  });

  it("agrees where the intervals overlap and not where they are apart", () => {
    const a = run("2026-01-01T00:00", { ctnet: [10, 11, 12], docker: [100, 110, 120] });
    const same = run("2026-01-02T00:00", { ctnet: [11, 12, 13], docker: [105, 115, 125] });
    const c = compareRuns(a, same);
    assert.equal(c.figures.length, 2);
    assert.ok(c.figures.every((f) => f.agrees));
    assert.deepEqual(
      c.ratios.map((r) => [r.peer, r.agrees]),
      [["docker", true]],
    );
    const slower = compareRuns(a, run("2026-01-03T00:00", { ctnet: [50, 51, 52], docker: [100, 110, 120] }));
    assert.deepEqual(
      slower.figures.map((f) => [f.system, f.agrees]),
      [
        ["ctnet", false],
        ["docker", true],
      ],
    );
    assert.equal(slower.ratios[0]?.agrees, false);
  });

  it("measures the machine's drift as a slow-down, for times and rates alike", () => {
    const times = run("2026-01-01T00:00", { ctnet: [10, 10, 10], docker: [100, 100, 100] });
    const slower = run("2026-01-02T00:00", { ctnet: [12, 12, 12], docker: [120, 120, 120] });
    assert.equal(Math.round(100 * (drift(compareRuns(times, slower))[0]?.median ?? 0)), 20);
    const rates = (xs: Row["samples"]) => {
      const r = run("2026-01-01T00:00", xs);
      (r.rows[0] as Row).unit = "Gbit/s";
      return r;
    };
    const d = drift(compareRuns(rates({ ctnet: [10, 10, 10] }), rates({ ctnet: [8, 8, 8] })));
    assert.equal(Math.round(100 * (d[0]?.median ?? 0)), 25);
  });
});
