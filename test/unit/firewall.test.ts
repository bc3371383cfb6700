import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidParameterError } from "../../src/errors.js";
import { Firewall } from "../../src/firewall/firewall.js";
import type { FirewallNetwork, FirewallPort, FirewallState } from "../../src/firewall/model.js";
import {
  desiredElements,
  renderDiff,
  renderFull,
  renderRuleset,
  renderTeardown,
  SET_KEYS,
} from "../../src/firewall/render.js";

function net(id: string, overrides: Partial<FirewallNetwork> = {}): FirewallNetwork {
  return {
    id,
    bridge: `br-${id}`,
    subnets4: [],
    subnets6: [],
    internal: false,
    masquerade: true,
    icc: true,
    ...overrides,
  };
}

const defaultBridge = net("default", { bridge: "ctnet0", subnets4: ["172.17.0.0/16"] });
const user = net("1a2b3c4d5e6f", { subnets4: ["172.18.0.0/16"], subnets6: ["fd00:18::/64"] });

describe("firewall rendering", () => {
  it("declares every set and map it fills, in the table its key names", () => {
    const ruleset = renderRuleset();
    for (const key of SET_KEYS) {
      const [family, table, name] = key.split(" ");
      const start = ruleset.indexOf(`table ${family} ${table} {`);
      assert.ok(start >= 0, key);
      const end = ruleset.indexOf("\n}\n", start);
      assert.match(ruleset.slice(start, end), new RegExp(`\\n  (set|map) ${name} \\{`), key);
    }
    assert.deepEqual(Object.keys(desiredElements({ networks: [] })).sort(), [...SET_KEYS].sort());
  });

  it("replaces our tables idempotently and touches no other table", () => {
    const ruleset = renderRuleset();
    const tables = [...ruleset.matchAll(/^(?:delete )?table (\w+) (\w+)/gm)].map((m) => `${m[1]} ${m[2]}`);
    assert.deepEqual([...new Set(tables)], ["inet ctnet", "bridge ctnet"]);
    assert.ok(ruleset.startsWith("table inet ctnet\ndelete table inet ctnet\ntable inet ctnet {"));
    assert.equal(
      renderTeardown(),
      "table inet ctnet\ndelete table inet ctnet\ntable bridge ctnet\ndelete table bridge ctnet\n",
    );
    assert.doesNotMatch(ruleset, /handle/);
  });

  it("renders elements deterministically, whatever the order of networks", () => {
    const a = renderFull({ networks: [defaultBridge, user] });
    const b = renderFull({ networks: [user, defaultBridge] });
    assert.equal(a, b);
    assert.equal(
      a.slice(renderRuleset().length),
      [
        'add element inet ctnet bridges { "br-1a2b3c4d5e6f", "ctnet0" }',
        'add element inet ctnet self_pairs { "br-1a2b3c4d5e6f" . "br-1a2b3c4d5e6f", "ctnet0" . "ctnet0" }',
        "add element inet ctnet masq4 { 172.17.0.0/16, 172.18.0.0/16 }",
        "add element inet ctnet masq6 { fd00:18::/64 }",
        "add element inet ctnet subnets4 { 172.17.0.0/16, 172.18.0.0/16 }",
        "add element inet ctnet subnets6 { fd00:18::/64 }",
        "",
      ].join("\n"),
    );
  });

  it("renders no element commands for an empty state", () => {
    assert.equal(renderFull({ networks: [] }), renderRuleset());
  });

  it("diffs to nothing for equal states", () => {
    const state: FirewallState = { networks: [defaultBridge, user] };
    assert.equal(renderDiff(state, structuredClone(state)), "");
    assert.equal(renderDiff(state, { networks: [user, defaultBridge] }), "");
  });

  it("adds only the new network's elements, and deletes only them on removal", () => {
    const before: FirewallState = { networks: [defaultBridge] };
    const after: FirewallState = { networks: [defaultBridge, user] };
    const added = [
      'add element inet ctnet bridges { "br-1a2b3c4d5e6f" }',
      'add element inet ctnet self_pairs { "br-1a2b3c4d5e6f" . "br-1a2b3c4d5e6f" }',
      "add element inet ctnet masq4 { 172.18.0.0/16 }",
      "add element inet ctnet masq6 { fd00:18::/64 }",
      "add element inet ctnet subnets4 { 172.18.0.0/16 }",
      "add element inet ctnet subnets6 { fd00:18::/64 }",
      "",
    ].join("\n");
    assert.equal(renderDiff(before, after), added);
    assert.equal(renderDiff(after, before), added.replaceAll("add element", "delete element"));
  });

  it("maps internal, masquerade and icc flags to their sets", () => {
    const internal = net("int", { internal: true, subnets4: ["10.1.0.0/24"] });
    const noMasq = net("nomasq", { masquerade: false, subnets4: ["10.2.0.0/24"] });
    const noIcc = net("noicc", { icc: false, subnets4: ["10.3.0.0/24"], ports: ["veth2", "veth1"] });
    const els = desiredElements({ networks: [internal, noMasq, noIcc] });
    assert.deepEqual(els["inet ctnet bridges"], ['"br-int"', '"br-noicc"', '"br-nomasq"']);
    assert.deepEqual(els["inet ctnet internal_bridges"], ['"br-int"']);
    assert.deepEqual(els["inet ctnet self_pairs"], ['"br-int" . "br-int"', '"br-nomasq" . "br-nomasq"']);
    assert.deepEqual(els["inet ctnet masq4"], ["10.3.0.0/24"]);
    assert.deepEqual(els["bridge ctnet noicc_ports"], ['"veth1"', '"veth2"']);
  });

  it("turns an endpoint joining an icc=false network into one element add", () => {
    const prev = net("noicc", { icc: false, ports: ["veth1"] });
    const next = { ...prev, ports: ["veth1", "veth2"] };
    assert.equal(
      renderDiff({ networks: [prev] }, { networks: [next] }),
      'add element bridge ctnet noicc_ports { "veth2" }\n',
    );
    assert.equal(renderDiff({ networks: [net("x", { ports: ["veth1"] })] }, { networks: [net("x")] }), "");
  });

  it("flipping icc moves the bridge between self_pairs and the port set", () => {
    const on = net("a", { ports: ["veth1"] });
    assert.equal(
      renderDiff({ networks: [on] }, { networks: [{ ...on, icc: false }] }),
      'delete element inet ctnet self_pairs { "br-a" . "br-a" }\n' +
        'add element bridge ctnet noicc_ports { "veth1" }\n',
    );
  });

  it("quotes interface names and rejects ones nft could misread", () => {
    assert.deepEqual(
      desiredElements({ networks: [net("x", { bridge: "a.b-c_d@e+f=g" })] })["inet ctnet bridges"],
      ['"a.b-c_d@e+f=g"'],
    );
    for (const bad of ['br"x', "br*", "br x", "", "0123456789abcdef", "..", "br}", "br;x", "br\\"]) {
      assert.throws(
        () => desiredElements({ networks: [net("x", { bridge: bad })] }),
        InvalidParameterError,
        bad,
      );
    }
    assert.throws(
      () => desiredElements({ networks: [net("x", { icc: false, ports: ["v*"] })] }),
      InvalidParameterError,
    );
  });

  it("normalises, validates and de-overlaps subnets", () => {
    const els = desiredElements({
      networks: [
        net("a", { subnets4: ["10.1.2.3/16"], subnets6: ["FD00:0:0:1::5/64"] }),
        net("b", {
          subnets4: ["10.1.7.0/24", "10.9.0.0/24"],
          subnets6: ["fd00:0:0:1:8000::/65", "fd00:2::/64"],
        }),
        net("c", { subnets4: ["10.1.0.0/16"] }),
      ],
    });
    assert.deepEqual(els["inet ctnet masq4"], ["10.1.0.0/16", "10.9.0.0/24"]);
    assert.deepEqual(els["inet ctnet masq6"], ["fd00:0:0:1::/64", "fd00:2::/64"]);
    for (const [v4, v6] of [
      [["10.1.0.0"], []],
      [["10.1.0.0/33"], []],
      [["fd00::/64"], []],
      [["10.0.0.0/8; flush ruleset"], []],
      [[], ["10.0.0.0/8"]],
      [[], ["fe80::1%eth0/64"]],
      [[], ["fd00::/129"]],
    ] as const) {
      assert.throws(
        () => desiredElements({ networks: [net("x", { subnets4: [...v4], subnets6: [...v6] })] }),
        InvalidParameterError,
      );
    }
  });

  it("masquerades IPv6 only for networks that have IPv6 subnets, and never for internal ones", () => {
    const els = desiredElements({
      networks: [
        net("v4only", { subnets4: ["10.1.0.0/24"] }),
        net("dual", { subnets4: ["10.2.0.0/24"], subnets6: ["fd00:2::/64"] }),
        net("int6", { internal: true, subnets6: ["fd00:3::/64"] }),
      ],
    });
    assert.deepEqual(els["inet ctnet masq6"], ["fd00:2::/64"]);
    assert.deepEqual(els["inet ctnet masq4"], ["10.1.0.0/24", "10.2.0.0/24"]);
  });

  it("moves a subnet into a wider one without an overlapping interval in between", () => {
    const narrow = net("a", { subnets4: ["10.1.1.0/24"] });
    const wide = net("b", { subnets4: ["10.1.0.0/16"] });
    assert.equal(
      renderDiff({ networks: [narrow] }, { networks: [narrow, wide] }),
      "delete element inet ctnet masq4 { 10.1.1.0/24 }\n" +
        "delete element inet ctnet subnets4 { 10.1.1.0/24 }\n" +
        'add element inet ctnet bridges { "br-b" }\n' +
        'add element inet ctnet self_pairs { "br-b" . "br-b" }\n' +
        "add element inet ctnet masq4 { 10.1.0.0/16 }\n" +
        "add element inet ctnet subnets4 { 10.1.0.0/16 }\n",
    );
  });
});

describe("published ports", () => {
  const a = net("a", { subnets4: ["10.1.0.0/24"], subnets6: ["fd00:1::/64"] });
  const internal = net("int", { internal: true, subnets4: ["10.2.0.0/24"] });
  const web: FirewallPort = {
    proto: "tcp",
    hostIp: "",
    hostPort: 8000,
    containerIp: "10.1.0.2",
    containerPort: 80,
    bridge: "br-a",
  };
  const ports = (...p: FirewallPort[]): FirewallState => ({ networks: [a, internal], ports: p });

  it("puts each port in the map of its family and host address", () => {
    const els = desiredElements(
      ports(
        web,
        { ...web, containerIp: "FD00:1:0::2" },
        { ...web, proto: "udp", hostPort: 53, containerPort: 5353 },
        { ...web, hostIp: "0.0.0.0", hostPort: 8001 },
        { ...web, hostIp: "192.0.2.1", hostPort: 8002 },
        { ...web, hostIp: "2001:db8:0::1", hostPort: 8003, containerIp: "fd00:1::2" },
        { ...web, hostIp: "::", hostPort: 8004, containerIp: "fd00:1::2" },
      ),
    );
    assert.deepEqual(els["inet ctnet pub4_any"], [
      "tcp . 8000 : 10.1.0.2 . 80",
      "tcp . 8001 : 10.1.0.2 . 80",
      "udp . 53 : 10.1.0.2 . 5353",
    ]);
    assert.deepEqual(els["inet ctnet pub4_ip"], ["tcp . 192.0.2.1 . 8002 : 10.1.0.2 . 80"]);
    assert.deepEqual(els["inet ctnet pub6_any"], [
      "tcp . 8000 : fd00:1::2 . 80",
      "tcp . 8004 : fd00:1::2 . 80",
    ]);
    assert.deepEqual(els["inet ctnet pub6_ip"], ["tcp . 2001:db8::1 . 8003 : fd00:1::2 . 80"]);
  });

  it("publishing one more port is one map element add, unpublishing one delete", () => {
    const more = { ...web, hostPort: 8001 };
    assert.equal(
      renderDiff(ports(web), ports(web, more)),
      "add element inet ctnet pub4_any { tcp . 8001 : 10.1.0.2 . 80 }\n",
    );
    assert.equal(
      renderDiff(ports(web, more), ports(more)),
      "delete element inet ctnet pub4_any { tcp . 8000 : 10.1.0.2 . 80 }\n",
    );
    assert.equal(renderDiff({ networks: [a, internal] }, ports()), "");
  });

  it("never forwards into an internal network", () => {
    const els = desiredElements(ports({ ...web, containerIp: "10.2.0.2", bridge: "br-int" }));
    assert.deepEqual(els["inet ctnet pub4_any"], []);
  });

  it("rejects ports nft would refuse or misread", () => {
    for (const bad of [
      { hostPort: 0 },
      { hostPort: 65536 },
      { containerPort: 1.5 },
      { proto: "sctp" },
      { containerIp: "10.1.0.300" },
      { containerIp: "fe80::1%eth0" },
      { hostIp: "::1" },
      { hostIp: "::" },
      { hostIp: "10.0.0.1; flush ruleset" },
      { bridge: "br-gone" },
    ] as Partial<FirewallPort>[]) {
      assert.throws(
        () => desiredElements(ports({ ...web, ...bad })),
        InvalidParameterError,
        JSON.stringify(bad),
      );
    }
    assert.throws(
      () => desiredElements(ports(web, { ...web, containerIp: "10.1.0.3" })),
      /tcp port 8000 on every address is published twice/,
    );
    assert.doesNotThrow(() => desiredElements(ports(web, { ...web })));
  });

  it("DNATs only local destinations, before the filter chains, on prerouting and output", () => {
    const ruleset = renderRuleset();
    assert.match(
      ruleset,
      /type nat hook prerouting priority dstnat;[^\n]*\n\s+fib daddr type local jump published/,
    );
    assert.match(
      ruleset,
      /type nat hook output priority -100;[^\n]*\n\s+fib daddr type local jump published/,
    );
    // Cross-network DNATed traffic is accepted before the bridge-to-bridge drop, after the internal ones.
    const forward = ruleset.slice(ruleset.indexOf("chain forward"));
    const at = (rule: string) => forward.indexOf(rule);
    assert.ok(
      at("oifname @internal_bridges drop") < at("iifname @bridges oifname @bridges ct status dnat accept"),
    );
    assert.ok(
      at("iifname @bridges oifname @bridges ct status dnat accept") <
        at("iifname @bridges oifname @bridges drop"),
    );
  });
});

describe("Firewall applier", () => {
  function recorder(failOn?: (text: string) => boolean) {
    const sent: string[] = [];
    const exec = (text: string) => {
      if (failOn?.(text)) throw new Error("nft failed");
      sent.push(text);
    };
    return { sent, exec };
  }

  it("loads in full, then sends only diffs, and nothing when nothing changed", () => {
    const { sent, exec } = recorder();
    const fw = new Firewall(exec);
    fw.load({ networks: [defaultBridge] });
    fw.update({ networks: [defaultBridge] });
    fw.update({ networks: [defaultBridge, user] });
    assert.equal(sent.length, 2);
    assert.equal(sent[0], renderFull({ networks: [defaultBridge] }));
    assert.equal(sent[1], renderDiff({ networks: [defaultBridge] }, { networks: [defaultBridge, user] }));
  });

  it("loads in full when updated before any load", () => {
    const { sent, exec } = recorder();
    new Firewall(exec).update({ networks: [user] });
    assert.deepEqual(sent, [renderFull({ networks: [user] })]);
  });

  it("keeps the old state after a failed exec, so a retry sends the same diff", () => {
    let fail = true;
    const { sent, exec } = recorder((t) => fail && t.startsWith("add element"));
    const fw = new Firewall(exec);
    fw.load({ networks: [] });
    assert.throws(() => fw.update({ networks: [user] }), /nft failed/);
    fail = false;
    fw.update({ networks: [user] });
    assert.equal(sent[1], renderDiff({ networks: [] }, { networks: [user] }));
  });

  it("does not see later mutations of the state it was given", () => {
    const { sent, exec } = recorder();
    const fw = new Firewall(exec);
    const state: FirewallState = { networks: [structuredClone(user)] };
    fw.load(state);
    state.networks.push(defaultBridge);
    fw.update(state);
    assert.equal(sent[1], renderDiff({ networks: [user] }, { networks: [user, defaultBridge] }));
  });

  it("rejects invalid state before sending anything", () => {
    const { sent, exec } = recorder();
    const fw = new Firewall(exec);
    fw.load({ networks: [] });
    assert.throws(() => fw.update({ networks: [net("x", { bridge: 'x"' })] }), InvalidParameterError);
    assert.equal(sent.length, 1);
    fw.teardown();
    assert.equal(sent[1], renderTeardown());
  });
});
