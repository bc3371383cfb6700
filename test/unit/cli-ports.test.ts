import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { UsageError } from "../../src/cli/errors.js";
import { formatPorts, naturalCompare, portLines } from "../../src/cli/format.js";
import { containerCreateBody, parseExpose, parsePortSpec } from "../../src/cli/requests.js";

const bindings = (spec: string) =>
  parsePortSpec(spec).map((m) => [m.port, m.binding.HostIp, m.binding.HostPort]);

describe("-p specs as the docker CLI parses them", () => {
  it("takes every form of IP, host port and container port", () => {
    assert.deepEqual(bindings("80"), [["80/tcp", "", ""]]);
    assert.deepEqual(bindings("8000:80/UDP"), [["80/udp", "", "8000"]]);
    assert.deepEqual(bindings("127.0.0.1::80"), [["80/tcp", "127.0.0.1", ""]]);
    assert.deepEqual(bindings("[::1]:8000:80"), [["80/tcp", "::1", "8000"]]);
    assert.deepEqual(bindings("[::1]::53/udp"), [["53/udp", "::1", ""]]);
    // docker joins everything before the last two fields into the IP, brackets or not.
    assert.deepEqual(bindings("::1:8000:80"), [["80/tcp", "::1", "8000"]]);
    assert.deepEqual(bindings("80/sctp"), [["80/sctp", "", ""]]);
  });

  it("expands ranges per port, and passes a host range for one container port whole", () => {
    assert.deepEqual(bindings("8000-8002:80-82"), [
      ["80/tcp", "", "8000"],
      ["81/tcp", "", "8001"],
      ["82/tcp", "", "8002"],
    ]);
    assert.deepEqual(bindings("80-81"), [
      ["80/tcp", "", ""],
      ["81/tcp", "", ""],
    ]);
    assert.deepEqual(bindings("8000-8010:80"), [["80/tcp", "", "8000-8010"]]);
    assert.deepEqual(bindings("8000-8000:80"), [["80/tcp", "", "8000"]]);
  });

  it("takes docker's long form", () => {
    assert.deepEqual(bindings("target=80,published=8080,protocol=udp"), [["80/udp", "", "8080"]]);
    assert.deepEqual(bindings("target=80"), [["80/tcp", "", ""]]);
    assert.throws(() => parsePortSpec("target=80,bogus"), /invalid publish opts format/);
  });

  it("rejects what docker rejects", () => {
    for (const [bad, re] of [
      ["", /no port specified/],
      ["8000:", /no port specified/],
      ["abc", /invalid containerPort: abc/],
      ["x:80", /invalid hostPort: x/],
      ["80/icmp", /invalid proto: icmp/],
      ["8000-8002:80-81", /invalid ranges specified for container and host Ports: 80-81 and 8000-8002/],
      ["1.2.3.4.5:80:80", /invalid IP address: 1\.2\.3\.4\.5/],
      ["[::1:80:80", /invalid IP address/],
      ["70000", /invalid containerPort/],
      ["90-80", /invalid containerPort/],
    ] as const) {
      assert.throws(
        () => parsePortSpec(bad),
        (e: Error) => e instanceof UsageError && re.test(e.message),
        bad,
      );
    }
  });

  it("--expose takes ports and ranges, never a host side", () => {
    assert.deepEqual(parseExpose("80"), ["80/tcp"]);
    assert.deepEqual(parseExpose("53/udp"), ["53/udp"]);
    assert.deepEqual(parseExpose("7000-7002/tcp"), ["7000/tcp", "7001/tcp", "7002/tcp"]);
    assert.throws(() => parseExpose("8000:80"), /invalid port format for --expose: 8000:80/);
    assert.throws(() => parseExpose("x"), /invalid range format for --expose: x/);
  });

  it("builds ExposedPorts, PortBindings and PublishAllPorts as docker sends them", () => {
    const body = containerCreateBody({
      command: ["sh"],
      publish: ["8000:80", "[::1]:8000:80", "53/udp", "9000-9001:90-91"],
      expose: ["7000-7001", "80"],
      publishAll: true,
    });
    assert.deepEqual(body.ExposedPorts, {
      "80/tcp": {},
      "53/udp": {},
      "90/tcp": {},
      "91/tcp": {},
      "7000/tcp": {},
      "7001/tcp": {},
    });
    assert.deepEqual(body.HostConfig?.PortBindings, {
      "80/tcp": [
        { HostIp: "", HostPort: "8000" },
        { HostIp: "::1", HostPort: "8000" },
      ],
      "53/udp": [{ HostIp: "", HostPort: "" }],
      "90/tcp": [{ HostIp: "", HostPort: "9000" }],
      "91/tcp": [{ HostIp: "", HostPort: "9001" }],
    });
    assert.equal(body.HostConfig?.PublishAllPorts, true);
  });
});

describe("port output as docker 28 prints it", () => {
  it("groups the PORTS column like docker ps", () => {
    assert.equal(
      formatPorts([
        { IP: "0.0.0.0", PrivatePort: 80, PublicPort: 8000, Type: "tcp" },
        { IP: "::", PrivatePort: 80, PublicPort: 8000, Type: "tcp" },
        { IP: "0.0.0.0", PrivatePort: 8001, PublicPort: 8001, Type: "tcp" },
        { IP: "0.0.0.0", PrivatePort: 8002, PublicPort: 8002, Type: "tcp" },
        { PrivatePort: 53, Type: "udp" },
        { PrivatePort: 54, Type: "udp" },
        { IP: "127.0.0.1", PrivatePort: 443, PublicPort: 32768, Type: "tcp" },
      ]),
      // Captured from docker 28.2's `docker ps` against a daemon returning exactly these ports.
      "53-54/udp, 0.0.0.0:8001-8002->8001-8002/tcp, 0.0.0.0:8000->80/tcp, [::]:8000->80/tcp, 127.0.0.1:32768->443/tcp",
    );
    assert.equal(
      formatPorts([
        { PrivatePort: 80, Type: "tcp" },
        { PrivatePort: 82, Type: "tcp" },
        { PrivatePort: 83, Type: "tcp" },
        { PrivatePort: 81, Type: "udp" },
      ]),
      "80/tcp, 82-83/tcp, 81/udp",
    );
    assert.equal(formatPorts([]), "");
  });

  it("lists mappings like docker port, or one port's host addresses", () => {
    const ports = {
      "80/tcp": [
        { HostIp: "0.0.0.0", HostPort: "8000" },
        { HostIp: "::", HostPort: "8000" },
      ],
      "9/tcp": [{ HostIp: "0.0.0.0", HostPort: "10" }],
      "443/tcp": null,
      "53/udp": [{ HostIp: "127.0.0.1", HostPort: "5353" }],
    };
    // Captured from docker 28.2's `docker port` for the same NetworkSettings.Ports.
    assert.deepEqual(portLines(ports, "x"), [
      "9/tcp -> 0.0.0.0:10",
      "53/udp -> 127.0.0.1:5353",
      "80/tcp -> 0.0.0.0:8000",
      "80/tcp -> [::]:8000",
    ]);
    assert.deepEqual(portLines(ports, "x", "80"), ["0.0.0.0:8000", "[::]:8000"]);
    assert.deepEqual(portLines(ports, "x", "53/udp"), ["127.0.0.1:5353"]);
    assert.throws(
      () => portLines(ports, "x", "443"),
      /^UsageError: Error: No public port '443' published for x$/,
    );
    assert.throws(() => portLines(ports, "x", "53"), /No public port '53' published for x/);
    assert.throws(() => portLines(ports, "x", "http"), /invalid port \(http\)/);
    assert.deepEqual(portLines(undefined, "x"), []);
  });

  it("sorts naturally", () => {
    assert.deepEqual(["10/tcp", "9/tcp", "100/tcp", "9/udp"].sort(naturalCompare), [
      "9/tcp",
      "9/udp",
      "10/tcp",
      "100/tcp",
    ]);
  });
});
