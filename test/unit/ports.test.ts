import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidParameterError } from "../../src/errors.js";
import {
  exposedPorts,
  parseContainerPort,
  parseHostIp,
  parseHostPort,
  portBindingRequests,
  portMapView,
  portSummaries,
} from "../../src/ports/parse.js";
import type { PortBinding } from "../../src/ports/types.js";

const invalid = (re: RegExp) => (e: Error) => e instanceof InvalidParameterError && re.test(e.message);

describe("Docker API port shapes", () => {
  it("parses container ports, tcp by default", () => {
    assert.deepEqual(parseContainerPort("80/tcp"), { proto: "tcp", port: 80 });
    assert.deepEqual(parseContainerPort("53/UDP"), { proto: "udp", port: 53 });
    assert.deepEqual(parseContainerPort("8080"), { proto: "tcp", port: 8080 });
    for (const bad of ["", "0/tcp", "65536/tcp", "80-81/tcp", "x/tcp", "/tcp", "080000"]) {
      assert.throws(() => parseContainerPort(bad), invalid(/^invalid port/), bad);
    }
    assert.throws(() => parseContainerPort("80/sctp"), invalid(/^invalid protocol "sctp"/));
    assert.throws(() => parseContainerPort("80/"), invalid(/^invalid protocol/));
  });

  it("parses host IPs into canonical form", () => {
    assert.equal(parseHostIp(undefined), "");
    assert.equal(parseHostIp(""), "");
    assert.equal(parseHostIp("127.0.0.1"), "127.0.0.1");
    assert.equal(parseHostIp("2001:DB8:0::1"), "2001:db8::1");
    assert.equal(parseHostIp("::ffff:192.0.2.1"), "192.0.2.1");
    for (const bad of ["localhost", "1.2.3", "[::1]", "fe80::1%eth0", "1.2.3.4/24"]) {
      assert.throws(() => parseHostIp(bad), invalid(/^invalid host IP/), bad);
    }
  });

  it("parses host ports: ephemeral, fixed, ranges", () => {
    assert.deepEqual(parseHostPort("", "80/tcp"), [0, 0]);
    assert.deepEqual(parseHostPort(undefined, "80/tcp"), [0, 0]);
    assert.deepEqual(parseHostPort("0", "80/tcp"), [0, 0]);
    assert.deepEqual(parseHostPort("8000", "80/tcp"), [8000, 8000]);
    assert.deepEqual(parseHostPort(8000, "80/tcp"), [8000, 8000]);
    assert.deepEqual(parseHostPort("8000-8010", "80/tcp"), [8000, 8010]);
    for (const bad of ["x", "8010-8000", "70000", "8000-", "-1", "1.5"]) {
      assert.throws(() => parseHostPort(bad, "80/tcp"), invalid(/^invalid host port .* for 80\/tcp/), bad);
    }
  });

  it("turns PortBindings into requests; -P adds every exposed port without a binding", () => {
    const portBindings = {
      "80/tcp": [
        { HostIp: "", HostPort: "8000" },
        { HostIp: "::1", HostPort: "8000-8010" },
      ],
      "53/udp": [{ HostPort: "" }],
      "443/tcp": null,
      "8443": [],
    };
    const exposed = { "80/tcp": {}, "9000/tcp": {}, "9000/udp": {} };
    assert.deepEqual(portBindingRequests({ portBindings, exposedPorts: exposed }), [
      { proto: "tcp", hostIp: "", hostPortStart: 8000, hostPortEnd: 8000, containerPort: 80 },
      { proto: "tcp", hostIp: "::1", hostPortStart: 8000, hostPortEnd: 8010, containerPort: 80 },
      { proto: "udp", hostIp: "", hostPortStart: 0, hostPortEnd: 0, containerPort: 53 },
    ]);
    const all = portBindingRequests({ portBindings, exposedPorts: exposed, publishAll: true });
    assert.deepEqual(
      all.slice(3).map((r) => `${r.containerPort}/${r.proto} ${r.hostPortStart}`),
      ["443/tcp 0", "8443/tcp 0", "9000/tcp 0", "9000/udp 0"],
    );
    assert.deepEqual(exposedPorts(exposed, portBindings), [
      "53/udp",
      "80/tcp",
      "443/tcp",
      "8443/tcp",
      "9000/tcp",
      "9000/udp",
    ]);
    assert.throws(
      () => portBindingRequests({ portBindings: { "80/tcp": [{ HostIp: "nope" }] } }),
      invalid(/invalid host IP/),
    );
  });

  it("shows bindings as Docker's inspect and list do", () => {
    const b: PortBinding[] = [
      { proto: "tcp", hostIp: "", hostPort: 8000, containerPort: 80 },
      { proto: "udp", hostIp: "127.0.0.1", hostPort: 5353, containerPort: 53 },
    ];
    const exposed = ["53/udp", "80/tcp", "443/tcp"];
    assert.deepEqual(portMapView(exposed, b, true), {
      "53/udp": [{ HostIp: "127.0.0.1", HostPort: "5353" }],
      "80/tcp": [
        { HostIp: "0.0.0.0", HostPort: "8000" },
        { HostIp: "::", HostPort: "8000" },
      ],
      "443/tcp": null,
    });
    assert.deepEqual(portMapView(exposed, b, false)["80/tcp"], [{ HostIp: "0.0.0.0", HostPort: "8000" }]);
    assert.deepEqual(portSummaries(exposed, b, true), [
      { IP: "0.0.0.0", PrivatePort: 80, PublicPort: 8000, Type: "tcp" },
      { IP: "::", PrivatePort: 80, PublicPort: 8000, Type: "tcp" },
      { IP: "127.0.0.1", PrivatePort: 53, PublicPort: 5353, Type: "udp" },
      { PrivatePort: 443, Type: "tcp" },
    ]);
  });
});
