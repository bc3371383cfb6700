import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { type DecodedPacket, decode, encode, type Packet, type RecordType } from "dns-packet";
import {
  answer,
  decodedAnswer,
  errorReply,
  type Outcome,
  quickAnswer,
  RoundRobin,
} from "../../src/dns/answer.js";
import { addressOfReverseName, parseUpstream, type ResolverView } from "../../src/dns/records.js";

const RD = 0x0100;

class FakeView implements ResolverView {
  readonly calls: string[] = [];
  constructor(
    private readonly names: Record<string, { v4?: string[]; v6?: string[] }>,
    private readonly ptr: Record<string, string> = {},
  ) {}
  lookup(sandboxId: string, name: string, family: 4 | 6): string[] | undefined {
    this.calls.push(`${sandboxId}:${name}:${family}`);
    const entry = this.names[name];
    if (!entry) return undefined;
    return (family === 4 ? entry.v4 : entry.v6) ?? [];
  }
  reverse(_sandboxId: string, address: string): string | undefined {
    return this.ptr[address];
  }
  upstreams(): string[] {
    return [];
  }
}

const view = new FakeView(
  {
    db: { v4: ["172.18.0.2"] },
    web: { v4: ["172.18.0.3", "172.18.0.4", "172.18.0.5"], v6: ["fd00::3"] },
    "db.mynet": { v4: ["172.18.0.2"] },
  },
  { "172.18.0.2": "db.mynet", "fd00::3": "web.mynet" },
);

function query(name: string, type: RecordType, extra: Partial<Packet> = {}): Buffer {
  return encode({ type: "query", id: 4242, flags: RD, questions: [{ type, name }], ...extra });
}

function ask(q: Buffer, o: { tcp?: boolean; rr?: RoundRobin; v?: ResolverView } = {}): Outcome {
  return answer(q, "sb1", o.v ?? view, o.rr ?? new RoundRobin(), o.tcp ?? false);
}

const datas = (r: DecodedPacket) => (r.answers ?? []).map((a) => (a as { data: unknown }).data);

function replyOf(out: Outcome): DecodedPacket {
  assert.equal(out.kind, "reply");
  return decode((out as { packet: Buffer }).packet);
}

describe("answer", () => {
  test("A for a known name: AA, RA, RD copied, id and question copied, TTL 600", () => {
    const r = replyOf(ask(query("DB.", "A")));
    assert.equal(r.id, 4242);
    assert.equal(r.type, "response");
    assert.ok(r.flag_aa && r.flag_ra && r.flag_rd && !r.flag_tc);
    assert.equal((r as DecodedPacket & { rcode: string }).rcode, "NOERROR");
    assert.deepEqual(r.questions, [{ name: "DB", type: "A", class: "IN" }]);
    assert.deepEqual(
      r.answers?.map((a) => [a.name, a.type, (a as { ttl: number }).ttl, (a as { data: string }).data]),
      [["DB", "A", 600, "172.18.0.2"]],
    );
    assert.ok(view.calls.includes("sb1:db:4"), "the view gets the name lowercase without the dot");
  });

  test("the name with its network appended resolves too (it is the view's name)", () => {
    const r = replyOf(ask(query("db.mynet", "A")));
    assert.deepEqual(datas(r), ["172.18.0.2"]);
  });

  test("AAAA for a known name", () => {
    const r = replyOf(ask(query("web", "AAAA")));
    assert.deepEqual(
      r.answers?.map((a) => (a as { data: string }).data),
      ["fd00::3"],
    );
  });

  test("a known name without an address of the family: NOERROR, no answers, not forwarded", () => {
    const r = replyOf(ask(query("db", "AAAA")));
    assert.equal((r as DecodedPacket & { rcode: string }).rcode, "NOERROR");
    assert.deepEqual(r.answers, []);
  });

  test("round robin: each query starts at the next address, A and AAAA counted apart", () => {
    const rr = new RoundRobin();
    const firsts: string[] = [];
    for (let i = 0; i < 4; i++) {
      const r = replyOf(ask(query("web", "A"), { rr }));
      ask(query("web", "AAAA"), { rr });
      const data = r.answers?.map((a) => (a as { data: string }).data) ?? [];
      assert.equal(data.length, 3);
      assert.deepEqual([...data].sort(), ["172.18.0.3", "172.18.0.4", "172.18.0.5"]);
      firsts.push(data[0] as string);
    }
    assert.deepEqual(firsts, ["172.18.0.3", "172.18.0.4", "172.18.0.5", "172.18.0.3"]);
  });

  test("PTR for a known IPv4 and IPv6 address", () => {
    const r4 = replyOf(ask(query("2.0.18.172.in-addr.arpa", "PTR")));
    assert.deepEqual(
      r4.answers?.map((a) => [a.name, a.type, (a as { data: string }).data]),
      [["2.0.18.172.in-addr.arpa", "PTR", "db.mynet"]],
    );
    const nibbles = "3.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa";
    const r6 = replyOf(ask(query(nibbles, "PTR")));
    assert.deepEqual(datas(r6), ["web.mynet"]);
  });

  test("unknown names, unknown addresses, other types and classes are forwarded", () => {
    assert.equal(ask(query("example.com", "A")).kind, "forward");
    assert.equal(ask(query("9.0.18.172.in-addr.arpa", "PTR")).kind, "forward");
    assert.equal(ask(query("0.18.172.in-addr.arpa", "PTR")).kind, "forward");
    assert.equal(ask(query("db", "TXT")).kind, "forward");
    assert.equal(ask(query("_x._tcp.db", "SRV")).kind, "forward");
    assert.equal(ask(query("example.com", "MX")).kind, "forward");
    assert.equal(ask(query(".", "NS")).kind, "forward");
    const chaos = encode({
      type: "query",
      id: 1,
      questions: [{ type: "TXT", name: "version.bind", class: "CH" }],
    });
    assert.equal(ask(chaos).kind, "forward");
  });

  test("MX for a container name: NOERROR without answers, as Docker", () => {
    const r = replyOf(ask(query("db", "MX")));
    assert.equal((r as DecodedPacket & { rcode: string }).rcode, "NOERROR");
    assert.deepEqual(r.answers, []);
  });

  test("UDP answers are truncated to whole records with TC; TCP and EDNS lift the limit", () => {
    const many = Array.from({ length: 60 }, (_, i) => `10.0.${i >> 8}.${i & 255}`);
    const big = new FakeView({ [`${"x".repeat(40)}`]: { v4: many } });
    const name = "x".repeat(40);
    const udp = ask(query(name, "A"), { v: big }) as { packet: Buffer };
    assert.ok(udp.packet.length <= 512);
    const r = decode(udp.packet);
    assert.ok(r.flag_tc);
    assert.ok((r.answers?.length ?? 0) > 0 && (r.answers?.length ?? 0) < 60);

    const tcp = decode((ask(query(name, "A"), { v: big, tcp: true }) as { packet: Buffer }).packet);
    assert.ok(!tcp.flag_tc);
    assert.equal(tcp.answers?.length, 60);

    const edns = query(name, "A", {
      additionals: [
        {
          type: "OPT",
          name: ".",
          udpPayloadSize: 4096,
          extendedRcode: 0,
          ednsVersion: 0,
          flags: 0,
          flag_do: false,
          options: [],
        },
      ],
    });
    const e = decode((ask(edns, { v: big }) as { packet: Buffer }).packet);
    assert.ok(!e.flag_tc);
    assert.equal(e.answers?.length, 60);
  });

  test("malformed input never throws", () => {
    assert.equal(ask(Buffer.alloc(0)).kind, "drop");
    assert.equal(ask(Buffer.from([1, 2, 3])).kind, "drop");
    // A response is never answered.
    const resp = encode({ type: "response", id: 7, questions: [{ type: "A", name: "db" }] });
    assert.equal(ask(resp).kind, "drop");

    const valid = query("db", "A");
    for (let cut = 12; cut < valid.length; cut++) {
      const r = replyOf(ask(valid.subarray(0, cut)));
      assert.equal((r as DecodedPacket & { rcode: string }).rcode, "FORMERR");
      assert.equal(r.id, 4242);
    }
    const two = encode({
      type: "query",
      id: 9,
      questions: [
        { type: "A", name: "db" },
        { type: "A", name: "web" },
      ],
    });
    assert.equal((replyOf(ask(two)) as DecodedPacket & { rcode: string }).rcode, "FORMERR");
    const noQuestion = encode({ type: "query", id: 9, questions: [] });
    assert.equal((replyOf(ask(noQuestion)) as DecodedPacket & { rcode: string }).rcode, "FORMERR");

    // A label that runs past the end, a compression loop, random bytes.
    assert.equal(ask(Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 63, 97])).kind, "reply");
    assert.equal(ask(Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1])).kind, "reply");
    let seed = 1;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed & 0xff;
    };
    for (let i = 0; i < 2000; i++) {
      const junk = Buffer.from(Array.from({ length: rand() % 80 }, rand));
      const out = ask(junk);
      assert.ok(["reply", "forward", "drop"].includes(out.kind));
    }
  });

  test("other opcodes: NOTIMP", () => {
    const notify = query("db", "SOA");
    notify.writeUInt16BE(notify.readUInt16BE(2) | (4 << 11), 2);
    const r = replyOf(ask(notify));
    assert.equal((r as DecodedPacket & { rcode: string }).rcode, "NOTIMP");
  });
});

/** An EDNS record without options, as clients send it. */
const OPT = {
  type: "OPT" as const,
  name: ".",
  udpPayloadSize: 1232,
  extendedRcode: 0,
  ednsVersion: 0,
  flags: 0,
  flag_do: false,
  options: [],
};

describe("quickAnswer (the fast path)", () => {
  const many = Array.from({ length: 60 }, (_, i) => `10.0.${i >> 8}.${i & 255}`);
  const v = new FakeView({
    ...{
      db: { v4: ["172.18.0.2"] },
      web: { v4: ["172.18.0.3", "172.18.0.4", "172.18.0.5"], v6: ["fd00::3", "2001:db8::1:0:0:1"] },
      "db.mynet": { v4: ["172.18.0.2"] },
      "under_score-1": { v4: ["172.18.0.9"] },
    },
    [`${"x".repeat(40)}`]: { v4: many, v6: many.map((_, i) => `fd00::${i.toString(16)}`) },
  });
  const quick = (q: Buffer, rr: RoundRobin, tcp = false) => quickAnswer(q, "sb1", v, rr, tcp);
  const full = (q: Buffer, rr: RoundRobin, tcp = false) => decodedAnswer(q, "sb1", v, rr, tcp);

  test("answers the common queries byte for byte as the full path does", () => {
    const cases: [string, Buffer][] = [];
    for (const name of ["db", "DB", "Db.MyNet", "web", "under_score-1", "x".repeat(40), "unknown", "a.b.c"])
      for (const type of ["A", "AAAA"] as const) {
        cases.push([`${name} ${type}`, query(name, type)]);
        cases.push([`${name} ${type} EDNS`, query(name, type, { additionals: [OPT] })]);
        cases.push([
          `${name} ${type} EDNS 4096`,
          query(name, type, { additionals: [{ ...OPT, udpPayloadSize: 4096 }] }),
        ]);
        cases.push([
          `${name} ${type} EDNS 100`,
          query(name, type, { additionals: [{ ...OPT, udpPayloadSize: 100 }] }),
        ]);
        cases.push([`${name} ${type} DO`, query(name, type, { additionals: [{ ...OPT, flags: 0x8000 }] })]);
        cases.push([`${name} ${type} no RD, CD and AD`, query(name, type, { flags: 0x0010 | 0x0020 })]);
      }
    for (const [label, q] of cases) {
      for (const tcp of [false, true]) {
        const rrQuick = new RoundRobin();
        const rrFull = new RoundRobin();
        // Several rounds, so that the rotation is compared too.
        for (let i = 0; i < 4; i++) {
          const a = quick(q, rrQuick, tcp);
          const b = full(q, rrFull, tcp);
          assert.ok(a !== undefined, `${label}: the fast path takes it`);
          assert.deepEqual(a, b, `${label}${tcp ? " over TCP" : ""}, round ${i}`);
        }
      }
    }
  });

  test("truncates as the full path: whole records with TC, EDNS size honoured", () => {
    const name = "x".repeat(40);
    const out = quick(query(name, "AAAA"), new RoundRobin()) as { kind: "reply"; packet: Buffer };
    const r = decode(out.packet);
    assert.ok(r.flag_tc && out.packet.length <= 512);
    assert.equal(r.answers?.length, Math.floor((512 - (12 + 42 + 4)) / (42 + 10 + 16)));
    const big = quick(
      query(name, "A", { additionals: [{ ...OPT, udpPayloadSize: 4096 }] }),
      new RoundRobin(),
    );
    assert.equal(decode((big as { packet: Buffer }).packet).answers?.length, 60);
  });

  test("unknown names are forwarded at once", () => {
    assert.deepEqual(quick(query("example", "A"), new RoundRobin()), { kind: "forward" });
  });

  test("anything unusual is left to the full path", () => {
    const rr = new RoundRobin();
    const left = (label: string, q: Buffer) => assert.equal(quick(q, rr), undefined, label);
    for (const type of ["PTR", "MX", "TXT", "SRV", "NS", "CNAME"] as const) left(type, query("db", type));
    left("class CH", encode({ type: "query", id: 1, questions: [{ type: "A", name: "db", class: "CH" }] }));
    left(
      "two questions",
      encode({
        type: "query",
        id: 1,
        questions: [
          { type: "A", name: "db" },
          { type: "A", name: "web" },
        ],
      }),
    );
    left(
      "an answer section",
      encode({
        type: "query",
        id: 1,
        questions: [{ type: "A", name: "db" }],
        answers: [{ type: "A", name: "db", data: "1.2.3.4" }],
      }),
    );
    // The OPT record's rdlength (its last two bytes) set to 12, then a client cookie (option 10).
    const withOpt = query("db", "A", { additionals: [OPT] });
    const cookie = Buffer.concat([
      withOpt.subarray(0, -2),
      Buffer.from([0, 12, 0, 10, 0, 8]),
      Buffer.alloc(8, 1),
    ]);
    assert.equal(decode(cookie).additionals?.length, 1);
    left("an EDNS option (a cookie)", cookie);
    left("two additionals", query("db", "A", { additionals: [OPT, OPT] }));
    left(
      "an additional that is not OPT",
      query("db", "A", { additionals: [{ type: "A", name: "db", data: "1.2.3.4" }] }),
    );
    left("the root", query(".", "A"));
    left("a label with a dot in it", query("db", "A").fill(0x2e, 13, 14));
    left("a label with a byte outside plain names", query("db", "A").fill(0xc3, 13, 14));
    left("trailing bytes", Buffer.concat([query("db", "A"), Buffer.from([0])]));
    left("a cut question", query("db", "A").subarray(0, 19));
    // The question's name as a pointer to a copy of "db" placed after it.
    const plain = query("db", "A");
    const pointer = Buffer.concat([
      plain.subarray(0, 12),
      Buffer.from([0xc0, 18, 0, 1, 0, 1]),
      plain.subarray(12, 16),
    ]);
    left("a compression pointer", pointer);
    const long = Array.from({ length: 5 }, () => "a".repeat(63)).join(".");
    const longQuery = Buffer.concat([
      Buffer.from([0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]),
      ...long.split(".").map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)])),
      Buffer.from([0, 0, 1, 0, 1]),
    ]);
    left("a name over 255 bytes", longQuery);
    const formerr = ask(longQuery) as { kind: string; packet: Buffer };
    assert.equal(formerr.kind, "reply");
    assert.equal((formerr.packet[3] as number) & 0x0f, 1, "FORMERR, as before");
  });

  test("whatever it takes from mutated queries, it answers as the full path", () => {
    let seed = 7;
    const rand = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed >> 8;
    };
    const bases = [
      query("web", "A"),
      query("Db.mynet", "AAAA", { additionals: [OPT] }),
      query("x".repeat(40), "A"),
    ];
    let taken = 0;
    for (let i = 0; i < 5000; i++) {
      const q = Buffer.from(bases[i % bases.length] as Buffer);
      for (let k = rand() % 3; k >= 0; k--) q[12 + (rand() % (q.length - 12))] = rand() & 0xff;
      const a = quick(q, new RoundRobin());
      if (a === undefined) continue;
      taken++;
      assert.deepEqual(a, full(q, new RoundRobin()), q.toString("hex"));
    }
    assert.ok(taken > 0);
  });

  test("an address of the wrong family from the view is an error, not garbage", () => {
    const wrong = new FakeView({ db: { v6: ["172.18.0.2"] } });
    assert.throws(() => quickAnswer(query("db", "AAAA"), "sb1", wrong, new RoundRobin(), false));
  });
});

describe("errorReply", () => {
  test("keeps the question byte for byte, even of a type dns-packet does not know", () => {
    const plain = query("Example.COM", "A");
    plain.writeUInt16BE(65280, plain.length - 4);
    // With an EDNS record after the question, which the reply must not count.
    const opt = encode({
      type: "query",
      additionals: [OPT],
    }).subarray(12);
    const q = Buffer.concat([plain, opt]);
    q.writeUInt16BE(1, 10);
    const out = errorReply(q, 2);
    assert.equal(out.length, plain.length);
    assert.deepEqual(out.subarray(12), plain.subarray(12));
    assert.deepEqual([...out.subarray(6, 12)], [0, 0, 0, 0, 0, 0]);
    assert.equal(out.readUInt16BE(0), 4242);
    assert.equal(out.readUInt16BE(2), 0x8000 | 0x0100 | 0x0080 | 2);
    assert.equal(out.readUInt16BE(4), 1);
  });
});

describe("records", () => {
  test("addressOfReverseName", () => {
    assert.equal(addressOfReverseName("4.3.2.1.in-addr.arpa"), "1.2.3.4");
    assert.equal(addressOfReverseName("3.2.1.in-addr.arpa"), undefined);
    assert.equal(addressOfReverseName("256.3.2.1.in-addr.arpa"), undefined);
    assert.equal(addressOfReverseName("04.3.2.1.in-addr.arpa"), undefined);
    const v6 = (addr: string) => `${[...addr].reverse().join(".")}.ip6.arpa`;
    assert.equal(addressOfReverseName(v6("fd000000000000000000000000000003")), "fd00::3");
    assert.equal(addressOfReverseName(v6("20010db8000000010000000000000001")), "2001:db8:0:1::1");
    assert.equal(addressOfReverseName(v6("00000000000000000000000000000001")), "::1");
    assert.equal(addressOfReverseName(v6("20010db8000000000001000000000000")), "2001:db8:0:0:1::");
    assert.equal(addressOfReverseName(v6("20010db8000000000001000000000001")), "2001:db8::1:0:0:1");
    assert.equal(addressOfReverseName(v6("20010db8000100010001000100010001")), "2001:db8:1:1:1:1:1:1");
    assert.equal(addressOfReverseName(v6("2001_db8000100010001000100010001")), undefined);
    assert.equal(addressOfReverseName("1.ip6.arpa"), undefined);
    assert.equal(addressOfReverseName("example.com"), undefined);
  });

  test("parseUpstream", () => {
    assert.deepEqual(parseUpstream("10.0.0.1"), { host: "10.0.0.1", port: 53, family: 4 });
    assert.deepEqual(parseUpstream("127.0.0.1:5353"), { host: "127.0.0.1", port: 5353, family: 4 });
    assert.deepEqual(parseUpstream("fd00::1"), { host: "fd00::1", port: 53, family: 6 });
    assert.deepEqual(parseUpstream("[fd00::1]:5353"), { host: "fd00::1", port: 5353, family: 6 });
    for (const bad of [
      "",
      "dns.example",
      "10.0.0.1:0",
      "10.0.0.1:x",
      "[fd00::1",
      "fe80::1%eth0",
      "999.1.1.1",
    ]) {
      assert.equal(parseUpstream(bad), undefined, bad);
    }
  });
});
