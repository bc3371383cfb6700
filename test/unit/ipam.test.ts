import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ConflictError, ForbiddenError, InvalidParameterError, NotFoundError } from "../../src/errors.js";
import {
  addressFamily,
  Ipam,
  type IpamOptions,
  macFromIPv4,
  NoAvailableAddressError,
  prefixLength,
  subnetContains,
  withPrefix,
} from "../../src/ipam/index.js";

const DOCKER_POOLS4 = [
  ...Array.from({ length: 15 }, (_, i) => ({ base: `172.${17 + i}.0.0/16`, size: 16 })),
  { base: "192.168.0.0/16", size: 20 },
];

function ipam(o: Partial<IpamOptions> = {}): Ipam {
  return new Ipam({
    defaultPools4: DOCKER_POOLS4,
    defaultPool6: { base: "fd4d:6169:6c63::/48", size: 64 },
    reserved: ["172.17.0.0/16"],
    ...o,
  });
}

/** asserts the error's class (hence HTTP status) and that its message contains `text` */
function throwsWith(fn: () => unknown, cls: new (m: string) => Error, text: string): void {
  assert.throws(fn, (e: Error) => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${e.constructor.name}: ${e.message}`);
    assert.ok(e.message.includes(text), `message "${e.message}" lacks "${text}"`);
    return true;
  });
}

describe("default pools", () => {
  test("user networks take 172.18…172.31, then 192.168.0.0/20, 192.168.16.0/20, …; 172.17 is kept for the default bridge", () => {
    const a = ipam();
    const subnets = Array.from({ length: 17 }, (_, i) => a.requestPool(`n${i}`, 4, {}).subnet);
    assert.deepEqual(subnets, [
      ...Array.from({ length: 14 }, (_, i) => `172.${18 + i}.0.0/16`),
      "192.168.0.0/20",
      "192.168.16.0/20",
      "192.168.32.0/20",
    ]);
    const bridge = a.requestPool("bridge", 4, { subnet: "172.17.0.0/16" });
    assert.deepEqual(bridge, { family: 4, subnet: "172.17.0.0/16", gateway: "172.17.0.1", auxAddresses: {} });
  });

  test("the default gateway is the first address of the subnet", () => {
    assert.equal(ipam().requestPool("n", 4, {}).gateway, "172.18.0.1");
  });

  test("skips pools overlapping host routes (but not the default route) and registered pools", () => {
    const a = ipam();
    const routes = ["0.0.0.0/0", "172.18.5.0/24", "172.20.0.1", "10.0.0.0/8", "fd00::/8"];
    a.requestPool("taken", 4, { subnet: "172.19.128.0/17" });
    assert.equal(a.requestPool("n", 4, {}, routes).subnet, "172.21.0.0/16");
  });

  test("an explicit subnet may overlap a host route, as in Docker", () => {
    const a = ipam();
    assert.equal(a.requestPool("n", 4, { subnet: "10.1.0.0/16" }, ["10.0.0.0/8"]).subnet, "10.1.0.0/16");
  });

  test("a released pool is handed out again", () => {
    const a = ipam();
    a.requestPool("n1", 4, {});
    a.requestPool("n2", 4, {});
    a.releasePool("n1", "172.18.0.0/16");
    assert.equal(a.requestPool("n3", 4, {}).subnet, "172.18.0.0/16");
  });

  test("exhausted defaults give Docker's 400", () => {
    const a = ipam({ defaultPools4: [{ base: "10.10.0.0/23", size: 24 }] });
    a.requestPool("n1", 4, {});
    a.requestPool("n2", 4, {});
    throwsWith(
      () => a.requestPool("n3", 4, {}),
      InvalidParameterError,
      "all predefined address pools have been fully subnetted",
    );
  });

  test("a big default block skips a conflict in one step", () => {
    const a = ipam({ defaultPools4: [{ base: "10.0.0.0/8", size: 24 }] });
    assert.equal(a.requestPool("n", 4, {}, ["10.0.0.0/9"]).subnet, "10.128.0.0/24");
  });

  test("IPv6 networks take /64s of the ULA /48 in order", () => {
    const a = ipam();
    const routes = ["fd4d:6169:6c63:1::/64", "::/0"];
    assert.equal(a.requestPool("n1", 6, {}, routes).subnet, "fd4d:6169:6c63::/64");
    const p = a.requestPool("n2", 6, {}, routes);
    assert.deepEqual(p, {
      family: 6,
      subnet: "fd4d:6169:6c63:2::/64",
      gateway: "fd4d:6169:6c63:2::1",
      auxAddresses: {},
    });
  });

  test("bad default pool configuration is refused at construction", () => {
    throwsWith(
      () => ipam({ defaultPools4: [{ base: "10.0.0.0/8", size: 4 }] }),
      InvalidParameterError,
      "size 4 must be between 8 and 32",
    );
    throwsWith(
      () => ipam({ defaultPool6: { base: "10.0.0.0/8", size: 24 } }),
      InvalidParameterError,
      "an IPv6 block is expected",
    );
  });
});

describe("explicit pools", () => {
  test("overlap with any registered pool is Docker's 403", () => {
    const a = ipam();
    a.requestPool("n1", 4, { subnet: "10.1.0.0/16" });
    for (const subnet of ["10.1.0.0/16", "10.1.2.0/24", "10.0.0.0/8"]) {
      throwsWith(
        () => a.requestPool("n2", 4, { subnet }),
        ForbiddenError,
        "invalid pool request: Pool overlaps with other one on this address space",
      );
    }
    assert.equal(a.requestPool("n2", 4, { subnet: "10.2.0.0/16" }).subnet, "10.2.0.0/16");
  });

  test("IPv6 input is normalised to the compressed form", () => {
    const p = ipam().requestPool("n", 6, {
      subnet: "FD00:0:0:0:0:0:0:0/64",
      ipRange: "fd00:0::0:8000:0:0:0/65",
      gateway: "fd00::0:fffe",
      auxAddresses: { r: "FD00::00AA" },
    });
    assert.deepEqual(p, {
      family: 6,
      subnet: "fd00::/64",
      ipRange: "fd00::8000:0:0:0/65",
      gateway: "fd00::fffe",
      auxAddresses: { r: "fd00::aa" },
    });
  });

  const bad: [string, Parameters<Ipam["requestPool"]>[2], string, (4 | 6)?][] = [
    ["prefix too long", { subnet: "10.0.0.0/33" }, "invalid subnet 10.0.0.0/33: invalid CIDR block notation"],
    ["no prefix", { subnet: "10.0.0.0" }, "invalid subnet 10.0.0.0: invalid CIDR block notation"],
    ["garbage", { subnet: "my-net" }, "invalid subnet my-net: invalid CIDR block notation"],
    ["short IPv4", { subnet: "10.1/16" }, "invalid subnet 10.1/16: invalid CIDR block notation"],
    ["leading zero prefix", { subnet: "10.0.0.0/08" }, "invalid CIDR block notation"],
    ["host bits set", { subnet: "10.0.0.5/24" }, "invalid subnet 10.0.0.5/24: it should be 10.0.0.0/24"],
    [
      "family mismatch",
      { subnet: "fd00::/64" },
      "invalid subnet fd00::/64: it is an IPv6 block, IPv4 expected",
    ],
    [
      "IPv4-mapped",
      { subnet: "::ffff:10.0.0.0/104" },
      "invalid subnet ::ffff:10.0.0.0/104: IPv4-mapped IPv6 subnets are not supported, use 10.0.0.0/8",
      6,
    ],
    ["zone index", { subnet: "fe80::%eth0/64" }, "zone indices are not allowed", 6],
    [
      "ip-range outside",
      { subnet: "10.0.0.0/24", ipRange: "10.0.1.0/25" },
      "invalid ip-range 10.0.1.0/25: parent subnet 10.0.0.0/24 doesn't contain ip-range",
    ],
    [
      "ip-range bigger",
      { subnet: "10.0.0.0/24", ipRange: "10.0.0.0/23" },
      "invalid ip-range 10.0.0.0/23: CIDR block is bigger than its parent subnet 10.0.0.0/24",
    ],
    [
      "ip-range host bits",
      { subnet: "10.0.0.0/24", ipRange: "10.0.0.129/25" },
      "invalid ip-range 10.0.0.129/25: it should be 10.0.0.128/25",
    ],
    [
      "ip-range family",
      { subnet: "10.0.0.0/24", ipRange: "fd00::/120" },
      "invalid ip-range fd00::/120: parent subnet is an IPv4 block",
    ],
    [
      "gateway outside",
      { subnet: "10.0.0.0/24", gateway: "10.1.0.1" },
      "invalid gateway 10.1.0.1: parent subnet 10.0.0.0/24 doesn't contain this address",
    ],
    [
      "gateway is network address",
      { subnet: "10.0.0.0/24", gateway: "10.0.0.0" },
      "invalid gateway 10.0.0.0: 10.0.0.0 is the network address of 10.0.0.0/24",
    ],
    [
      "gateway is broadcast",
      { subnet: "10.0.0.0/24", gateway: "10.0.0.255" },
      "invalid gateway 10.0.0.255: 10.0.0.255 is the broadcast address of 10.0.0.0/24",
    ],
    [
      "gateway garbage",
      { subnet: "10.0.0.0/24", gateway: "10.0.0.256" },
      "invalid gateway 10.0.0.256: invalid address 10.0.0.256",
    ],
    [
      "gateway with prefix",
      { subnet: "10.0.0.0/24", gateway: "10.0.0.1/24" },
      "invalid gateway 10.0.0.1/24: invalid address",
    ],
    [
      "aux outside",
      { subnet: "10.0.0.0/24", auxAddresses: { router: "10.0.1.1" } },
      "invalid auxiliary address router: parent subnet 10.0.0.0/24 doesn't contain this address",
    ],
    [
      "aux is gateway",
      { subnet: "10.0.0.0/24", auxAddresses: { router: "10.0.0.1" } },
      "invalid auxiliary address router: 10.0.0.1 is already the gateway of 10.0.0.0/24",
    ],
    [
      "aux twice",
      { subnet: "10.0.0.0/24", auxAddresses: { a: "10.0.0.9", b: "10.0.0.9" } },
      'invalid auxiliary address b: 10.0.0.9 is already auxiliary address "a"',
    ],
    [
      "ip-range without subnet",
      { ipRange: "10.0.0.0/24" },
      "invalid pool request: an ip-range, gateway or auxiliary address needs an explicit subnet",
    ],
  ];
  for (const [name, req, message, family] of bad) {
    test(`rejects ${name} with 400`, () => {
      throwsWith(() => ipam().requestPool("n", family ?? 4, req), InvalidParameterError, message);
    });
  }

  test("a refused request registers nothing", () => {
    const a = ipam();
    assert.throws(() => a.requestPool("n", 4, { subnet: "10.0.0.0/24", gateway: "10.9.0.1" }));
    assert.equal(a.requestPool("n", 4, { subnet: "10.0.0.0/24" }).subnet, "10.0.0.0/24");
  });

  test("IPv4 and IPv6 pools never conflict with each other", () => {
    const a = ipam();
    a.requestPool("n", 4, { subnet: "0.0.0.0/1" });
    assert.equal(a.requestPool("n", 6, { subnet: "::/1" }).subnet, "::/1");
  });
});

describe("addresses", () => {
  test("dynamic allocation skips network, gateway and aux addresses, and stops before broadcast", () => {
    const a = ipam();
    const { subnet } = a.requestPool("n", 4, {
      subnet: "10.0.0.0/29",
      gateway: "10.0.0.2",
      auxAddresses: { a: "10.0.0.4" },
    });
    const got = Array.from({ length: 4 }, () => a.requestAddress("n", subnet));
    assert.deepEqual(got, ["10.0.0.1", "10.0.0.3", "10.0.0.5", "10.0.0.6"]);
    throwsWith(() => a.requestAddress("n", subnet), ConflictError, "no available IPv4 addresses");
  });

  test("dynamic allocation stays inside the ip-range; a static address may be outside it (Docker)", () => {
    const a = ipam();
    const { subnet } = a.requestPool("n", 4, { subnet: "10.0.0.0/24", ipRange: "10.0.0.128/30" });
    assert.equal(a.requestAddress("n", subnet, "10.0.0.50"), "10.0.0.50");
    const got = Array.from({ length: 4 }, () => a.requestAddress("n", subnet));
    assert.deepEqual(got, ["10.0.0.128", "10.0.0.129", "10.0.0.130", "10.0.0.131"]);
    assert.throws(() => a.requestAddress("n", subnet), NoAvailableAddressError);
    // a static address inside the range counts against it
    a.releaseAddress("n", subnet, "10.0.0.129");
    assert.equal(a.requestAddress("n", subnet, "10.0.0.129"), "10.0.0.129");
    assert.throws(() => a.requestAddress("n", subnet), NoAvailableAddressError);
  });

  test("static addresses are validated", () => {
    const a = ipam();
    const { subnet } = a.requestPool("n", 4, { subnet: "10.0.0.0/24", auxAddresses: { host: "10.0.0.7" } });
    a.requestAddress("n", subnet, "10.0.0.20");
    const cases: [string, new (m: string) => Error, string][] = [
      ["10.0.0.20", ForbiddenError, "Address already in use: 10.0.0.20"],
      ["10.0.0.1", ForbiddenError, "Address already in use: 10.0.0.1 is the gateway of 10.0.0.0/24"],
      ["10.0.0.7", ForbiddenError, 'Address already in use: 10.0.0.7 is auxiliary address "host"'],
      ["10.0.0.0", InvalidParameterError, "requested address 10.0.0.0 is the network address of 10.0.0.0/24"],
      ["10.0.0.255", InvalidParameterError, "is the broadcast address of 10.0.0.0/24"],
      [
        "10.0.1.5",
        InvalidParameterError,
        "requested address 10.0.1.5 is out of range: it does not belong to subnet 10.0.0.0/24",
      ],
      ["fd00::5", InvalidParameterError, "is out of range"],
      ["10.0.0.300", InvalidParameterError, "invalid IP address: 10.0.0.300"],
      [
        "::ffff:10.0.0.5",
        InvalidParameterError,
        "IPv4-mapped IPv6 addresses are not supported, use 10.0.0.5",
      ],
    ];
    for (const [ip, cls, message] of cases) throwsWith(() => a.requestAddress("n", subnet, ip), cls, message);
  });

  test("allocation is serial: a released address is not reused at once, only after wrapping", () => {
    const a = ipam();
    const { subnet } = a.requestPool("n", 4, { subnet: "10.0.0.0/29" }); // .1 gateway, .2–.6 usable
    assert.equal(a.requestAddress("n", subnet), "10.0.0.2");
    assert.equal(a.requestAddress("n", subnet), "10.0.0.3");
    a.releaseAddress("n", subnet, "10.0.0.2");
    assert.equal(a.requestAddress("n", subnet), "10.0.0.4");
    assert.equal(a.requestAddress("n", subnet), "10.0.0.5");
    assert.equal(a.requestAddress("n", subnet), "10.0.0.6");
    assert.equal(a.requestAddress("n", subnet), "10.0.0.2");
    throwsWith(() => a.requestAddress("n", subnet), ConflictError, "no available IPv4 addresses");
  });

  test("a /30 holds a gateway and one container, then reports exhaustion with 409", () => {
    const a = ipam();
    const { subnet } = a.requestPool("n", 4, { subnet: "192.0.2.0/30" });
    assert.equal(a.requestAddress("n", subnet), "192.0.2.2");
    assert.throws(
      () => a.requestAddress("n", subnet),
      (e: Error) =>
        e instanceof NoAvailableAddressError &&
        e instanceof ConflictError &&
        e.status === 409 &&
        e.family === 4 &&
        e.subnet === "192.0.2.0/30" &&
        e.message === "no available IPv4 addresses on this network's address pools: 192.0.2.0/30",
    );
    a.releaseAddress("n", subnet, "192.0.2.2");
    assert.equal(a.requestAddress("n", subnet), "192.0.2.2");
    assert.equal(
      NoAvailableAddressError.forNetwork(4, "my_net", "abc123").message,
      "no available IPv4 addresses on this network's address pools: my_net (abc123)",
    );
  });

  test("/31 and /32 have no network or broadcast address", () => {
    const a = ipam();
    const p31 = a.requestPool("n", 4, { subnet: "192.0.2.0/31" });
    assert.equal(p31.gateway, "192.0.2.0");
    assert.equal(a.requestAddress("n", p31.subnet), "192.0.2.1");
    const p32 = a.requestPool("m", 4, { subnet: "192.0.2.8/32" });
    assert.equal(p32.gateway, "192.0.2.8");
    assert.throws(() => a.requestAddress("m", p32.subnet), NoAvailableAddressError);
  });

  test("IPv6 has no broadcast: the last address of the subnet is handed out", () => {
    const a = ipam();
    const { subnet } = a.requestPool("n", 6, { subnet: "fd00::/126" });
    assert.deepEqual([a.requestAddress("n", subnet), a.requestAddress("n", subnet)], ["fd00::2", "fd00::3"]);
    throwsWith(() => a.requestAddress("n", subnet), ConflictError, "no available IPv6 addresses");
    throwsWith(() => a.requestAddress("n", subnet, "fd00::"), InvalidParameterError, "network address");
  });

  test("a subnet may be named in any spelling", () => {
    const a = ipam();
    a.requestPool("n", 6, { subnet: "fd00:1::/64" });
    assert.equal(a.requestAddress("n", "FD00:1:0::/64", "fd00:1::0:0:00a"), "fd00:1::a");
  });

  test("unknown pools are 404 for requests and ignored by releases", () => {
    const a = ipam();
    throwsWith(
      () => a.requestAddress("n", "10.0.0.0/24"),
      NotFoundError,
      "network n has no address pool 10.0.0.0/24",
    );
    a.releaseAddress("n", "10.0.0.0/24", "10.0.0.2");
    a.releasePool("n", "10.0.0.0/24");
    const { subnet } = a.requestPool("n", 4, { subnet: "10.0.0.0/24" });
    a.releaseAddress("n", subnet, "10.0.0.9"); // never allocated
    a.releaseAddress("n", subnet, "10.0.0.1"); // the gateway stays reserved
    throwsWith(() => a.requestAddress("n", subnet, "10.0.0.1"), ForbiddenError, "is the gateway");
  });

  test("huge subnets allocate without materialising addresses (/8 and /64)", (t) => {
    const a = ipam();
    const v4 = a.requestPool("big4", 4, { subnet: "10.0.0.0/8", auxAddresses: { x: "10.0.0.100" } }).subnet;
    const v6 = a.requestPool("big6", 6, { subnet: "fd00:abcd::/64" }).subnet;
    for (const [id, subnet] of [
      ["big4", v4],
      ["big6", v6],
    ] as const) {
      const seen = new Set<string>();
      const started = performance.now();
      for (let i = 0; i < 10_000; i++) seen.add(a.requestAddress(id, subnet));
      t.diagnostic(`${subnet}: 10,000 allocations in ${(performance.now() - started).toFixed(1)} ms`);
      assert.equal(seen.size, 10_000);
      for (const ip of seen) assert.ok(subnetContains(subnet, ip), ip);
    }
    const all4 = new Set<string>();
    const a2 = ipam();
    a2.requestPool("big4", 4, { subnet: "10.0.0.0/8", auxAddresses: { x: "10.0.0.100" } });
    for (let i = 0; i < 300; i++) all4.add(a2.requestAddress("big4", "10.0.0.0/8"));
    assert.ok(!all4.has("10.0.0.1") && !all4.has("10.0.0.100") && !all4.has("10.0.0.0"));
    assert.ok(all4.has("10.0.1.0"), "10.0.1.0 is an ordinary host address inside a /8");
  });
});

describe("restore", () => {
  test("pools and addresses from the store are re-registered and kept", () => {
    // host routes play no part in restoring: the network's own bridge route is among them
    const a = ipam();
    a.restorePool("n", {
      family: 4,
      subnet: "172.18.0.0/16",
      gateway: "172.18.0.1",
      auxAddresses: { r: "172.18.0.2" },
    });
    a.restoreAddress("n", "172.18.0.0/16", "172.18.0.3");
    a.restoreAddress("n", "172.18.0.0/16", "172.18.0.5");
    assert.equal(a.requestAddress("n", "172.18.0.0/16"), "172.18.0.4");
    assert.equal(a.requestAddress("n", "172.18.0.0/16"), "172.18.0.6");
    throwsWith(
      () => a.restoreAddress("n", "172.18.0.0/16", "172.18.0.5"),
      ForbiddenError,
      "Address already in use",
    );
    throwsWith(
      () =>
        a.restorePool("m", { family: 4, subnet: "172.18.4.0/24", gateway: "172.18.4.1", auxAddresses: {} }),
      ForbiddenError,
      "Pool overlaps",
    );
    throwsWith(
      () => a.restorePool("m", { family: 4, subnet: "10.0.0.0/24", gateway: "10.0.1.1", auxAddresses: {} }),
      InvalidParameterError,
      "invalid gateway 10.0.1.1",
    );
    throwsWith(() => a.restoreAddress("x", "10.0.0.0/24", "10.0.0.2"), NotFoundError, "has no address pool");
    assert.equal(a.requestPool("m", 4, {}).subnet, "172.19.0.0/16");
  });

  test("a restored pool round-trips through requestPool's output", () => {
    const a = ipam();
    const p = a.requestPool("n", 6, {
      subnet: "fd00::/64",
      ipRange: "fd00::/80",
      auxAddresses: { x: "fd00::9" },
    });
    const b = ipam();
    b.restorePool("n", p);
    b.restoreAddress("n", p.subnet, "fd00::2");
    assert.equal(b.requestAddress("n", p.subnet), "fd00::3");
  });
});

describe("helpers", () => {
  test("macFromIPv4 follows Docker", () => {
    assert.equal(macFromIPv4("172.17.0.2"), "02:42:ac:11:00:02");
    assert.equal(macFromIPv4("10.255.0.1"), "02:42:0a:ff:00:01");
    throwsWith(() => macFromIPv4("fd00::1"), InvalidParameterError, "invalid IPv4 address: fd00::1");
  });

  test("prefixes, families, containment", () => {
    assert.equal(prefixLength("10.0.0.0/24"), 24);
    assert.equal(withPrefix("10.0.0.2", "10.0.0.0/24"), "10.0.0.2/24");
    assert.equal(withPrefix("fd00::2", "fd00::/64"), "fd00::2/64");
    assert.equal(addressFamily("10.0.0.1"), 4);
    assert.equal(addressFamily("fd00::/64"), 6);
    assert.ok(subnetContains("10.0.0.0/24", "10.0.0.255"));
    assert.ok(!subnetContains("10.0.0.0/24", "10.0.1.0"));
    assert.ok(!subnetContains("::/0", "10.0.0.1"));
    throwsWith(() => prefixLength("10.0.0.0/33"), InvalidParameterError, "invalid CIDR address 10.0.0.0/33");
    throwsWith(() => addressFamily("nope"), InvalidParameterError, "invalid IP address: nope");
  });
});
