import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { UsageError } from "../../src/cli/errors.js";
import {
  alignTable,
  containerRow,
  ellipsis,
  formatList,
  formatPorts,
  humanDuration,
  NETWORK_HEADERS,
  NETWORK_TABLE,
  networkRow,
} from "../../src/cli/format.js";
import {
  containerCreateBody,
  ipamConfigs,
  networkCreateBody,
  parseFilters,
  parseNetworkFlag,
  parsePortSpec,
} from "../../src/cli/requests.js";

describe("network create body", () => {
  it("has docker's shape with defaults", () => {
    assert.deepEqual(networkCreateBody({ name: "n1" }), {
      Name: "n1",
      Driver: "bridge",
      Internal: false,
      Attachable: false,
      EnableIPv6: false,
      Options: {},
      Labels: {},
      IPAM: { Driver: "default", Config: [], Options: {} },
    });
  });

  it("carries flags, options and labels", () => {
    const body = networkCreateBody({
      name: "n1",
      driver: "macvlan",
      ipv6: true,
      internal: true,
      attachable: true,
      opt: ["parent=eth0", "com.docker.network.driver.mtu=1400"],
      label: ["a=b", "flag"],
      ipamOpt: ["x=y"],
    });
    assert.equal(body.Driver, "macvlan");
    assert.equal(body.EnableIPv6, true);
    assert.equal(body.Internal, true);
    assert.equal(body.Attachable, true);
    assert.deepEqual(body.Options, { parent: "eth0", "com.docker.network.driver.mtu": "1400" });
    assert.deepEqual(body.Labels, { a: "b", flag: "" });
    assert.deepEqual(body.IPAM?.Options, { x: "y" });
  });

  it("pairs ranges, gateways and aux addresses with the subnet containing them, not by position", () => {
    assert.deepEqual(
      ipamConfigs({
        subnet: ["10.1.0.0/16", "fd00::/64", "10.2.0.0/16"],
        gateway: ["10.2.0.1", "fd00::1", "10.1.0.1"],
        ipRange: ["10.2.5.0/24"],
        auxAddress: ["router=10.1.0.2", "v6=fd00::2"],
      }),
      [
        { Subnet: "10.1.0.0/16", Gateway: "10.1.0.1", AuxiliaryAddresses: { router: "10.1.0.2" } },
        { Subnet: "fd00::/64", Gateway: "fd00::1", AuxiliaryAddresses: { v6: "fd00::2" } },
        { Subnet: "10.2.0.0/16", Gateway: "10.2.0.1", IPRange: "10.2.5.0/24" },
      ],
    );
  });

  it("refuses what docker refuses", () => {
    const cases: [Parameters<typeof ipamConfigs>[0], RegExp][] = [
      [{ gateway: ["10.0.0.1"] }, /every ip-range or gateway must have a corresponding subnet/],
      [{ subnet: ["10.0.0.0/8", "10.1.0.0/16"] }, /overlapping subnet/],
      [{ subnet: ["10.0.0.0/16"], gateway: ["10.9.0.1"] }, /no matching subnet for gateway 10.9.0.1/],
      [{ subnet: ["10.0.0.0/16"], ipRange: ["10.9.0.0/24"] }, /no matching subnet for range/],
      [{ subnet: ["10.0.0.0/16", "10.1.0.0/16"], gateway: ["10.0.0.1", "10.0.0.2"] }, /multiple gateways/],
      [{ subnet: ["10.0.0.0/16"], auxAddress: ["a=10.9.0.1"] }, /no matching subnet for aux-address/],
      [{ subnet: ["bogus"] }, /invalid subnet/],
    ];
    for (const [opts, re] of cases)
      assert.throws(
        () => ipamConfigs(opts),
        (err: Error) => err instanceof UsageError && re.test(err.message),
      );
  });
});

describe("port specs", () => {
  it("parses docker's forms", () => {
    assert.deepEqual(parsePortSpec("80"), [{ port: "80/tcp", binding: { HostIp: "", HostPort: "" } }]);
    assert.deepEqual(parsePortSpec("8080:80"), [
      { port: "80/tcp", binding: { HostIp: "", HostPort: "8080" } },
    ]);
    assert.deepEqual(parsePortSpec("127.0.0.1:5353:53/udp"), [
      { port: "53/udp", binding: { HostIp: "127.0.0.1", HostPort: "5353" } },
    ]);
    assert.deepEqual(parsePortSpec("127.0.0.1::80"), [
      { port: "80/tcp", binding: { HostIp: "127.0.0.1", HostPort: "" } },
    ]);
    assert.deepEqual(parsePortSpec("[::1]:8080:80"), [
      { port: "80/tcp", binding: { HostIp: "::1", HostPort: "8080" } },
    ]);
  });

  it("expands ranges and passes a host range for one container port whole", () => {
    assert.deepEqual(
      parsePortSpec("8000-8001:80-81").map((m) => [m.port, m.binding.HostPort]),
      [
        ["80/tcp", "8000"],
        ["81/tcp", "8001"],
      ],
    );
    assert.deepEqual(parsePortSpec("8000-8010:80")[0].binding.HostPort, "8000-8010");
  });

  it("rejects bad specs", () => {
    for (const bad of ["", "abc", "80/icmp", "8000-8002:80-81", "1.2.3.4.5:80:80", "70000", "a:b:c:d"]) {
      assert.throws(() => parsePortSpec(bad), UsageError, bad);
    }
  });
});

describe("run body", () => {
  it("sends the command with no image, on the default bridge", () => {
    const body = containerCreateBody({ command: ["sleep", "1000"], detach: true });
    assert.deepEqual(body, {
      Hostname: "",
      Env: [],
      Cmd: ["sleep", "1000"],
      Image: "",
      Tty: false,
      OpenStdin: false,
      AttachStdout: false,
      AttachStderr: false,
      ExposedPorts: {},
      HostConfig: {
        NetworkMode: "bridge",
        AutoRemove: false,
        Dns: [],
        PortBindings: {},
        PublishAllPorts: false,
      },
      NetworkingConfig: { EndpointsConfig: { bridge: {} } },
    });
  });

  it("puts --ip, --ip6 and --network-alias on the first network, one endpoint per network", () => {
    const body = containerCreateBody(
      {
        command: ["sh"],
        network: ["my_bridge", "name=other,alias=db,ip=10.9.0.5"],
        ip: "172.18.0.10",
        ip6: "fd00::10",
        networkAlias: ["web"],
        hostname: "h1",
        dns: ["10.0.0.53"],
        env: ["A=1", "FROM_ENV", "UNSET"],
        rm: true,
        publish: ["8080:80", "9090:80"],
      },
      { FROM_ENV: "x" },
    );
    assert.equal(body.HostConfig?.NetworkMode, "my_bridge");
    assert.deepEqual(body.NetworkingConfig?.EndpointsConfig, {
      my_bridge: { IPAMConfig: { IPv4Address: "172.18.0.10", IPv6Address: "fd00::10" }, Aliases: ["web"] },
      other: { IPAMConfig: { IPv4Address: "10.9.0.5" }, Aliases: ["db"] },
    });
    assert.deepEqual(body.Env, ["A=1", "FROM_ENV=x", "UNSET"]);
    assert.equal(body.Hostname, "h1");
    assert.deepEqual(body.HostConfig?.Dns, ["10.0.0.53"]);
    assert.equal(body.HostConfig?.AutoRemove, true);
    assert.deepEqual(body.ExposedPorts, { "80/tcp": {} });
    assert.deepEqual(body.HostConfig?.PortBindings, {
      "80/tcp": [
        { HostIp: "", HostPort: "8080" },
        { HostIp: "", HostPort: "9090" },
      ],
    });
    assert.equal(body.AttachStdout, true);
  });

  it("gives container: mode no endpoint, and refuses mixing built-in and user networks", () => {
    const body = containerCreateBody({ command: ["sh"], network: ["container:c1"] });
    assert.equal(body.HostConfig?.NetworkMode, "container:c1");
    assert.deepEqual(body.NetworkingConfig?.EndpointsConfig, {});
    assert.throws(
      () => containerCreateBody({ command: ["sh"], network: ["host", "my_bridge"] }),
      /conflicting options/,
    );
    assert.throws(
      () => containerCreateBody({ command: ["sh"], network: ["a", "a"] }),
      /specified multiple times/,
    );
    assert.throws(() => containerCreateBody({ command: [] }), UsageError);
  });

  it("parses --network's advanced syntax", () => {
    assert.deepEqual(parseNetworkFlag("n1"), { name: "n1", aliases: [] });
    assert.deepEqual(parseNetworkFlag("name=n1,alias=a,alias=b,ip6=fd00::2"), {
      name: "n1",
      aliases: ["a", "b"],
      ipv6: "fd00::2",
    });
    assert.throws(() => parseNetworkFlag("alias=a"), /name is required/);
    assert.throws(() => parseNetworkFlag("name=a,bogus=1"), /invalid field key/);
  });
});

describe("filters", () => {
  it("groups repeated keys into docker's map of lists", () => {
    assert.deepEqual(parseFilters(["driver=bridge", "label=a=b", "driver=macvlan"]), {
      driver: ["bridge", "macvlan"],
      label: ["a=b"],
    });
    assert.deepEqual(parseFilters(undefined), {});
    assert.throws(() => parseFilters(["nokey"]), /bad format of filter/);
  });
});

describe("output formatting", () => {
  it("aligns like docker's tabwriter: min width 10, padding 3, last column unpadded", () => {
    assert.equal(
      alignTable(["NETWORK ID\tNAME\tDRIVER", "0123456789ab\tmy_bridge\tbridge"]),
      "NETWORK ID     NAME        DRIVER\n0123456789ab   my_bridge   bridge",
    );
  });

  const networks = [
    { Name: "bridge", Id: "a".repeat(64), Driver: "bridge", Scope: "local", Created: "2024-05-01T10:00:00Z" },
    { Name: "my_bridge", Id: "b".repeat(64), Driver: "bridge", Scope: "local", Labels: { k: "v" } },
  ];

  it("prints the default network table with 12-character IDs", () => {
    const rows = networks.map((n) => networkRow(n, false));
    assert.equal(
      formatList(rows, undefined, NETWORK_TABLE, NETWORK_HEADERS),
      "NETWORK ID     NAME        DRIVER    SCOPE\n" +
        "aaaaaaaaaaaa   bridge      bridge    local\n" +
        "bbbbbbbbbbbb   my_bridge   bridge    local\n",
    );
  });

  it("supports table TEMPLATE with literal \\t, json lines and bare templates", () => {
    const rows = networks.map((n) => networkRow(n, true));
    assert.equal(
      formatList(rows, "table {{.ID}}\\t{{.Name}}", NETWORK_TABLE, NETWORK_HEADERS),
      `NETWORK ID${" ".repeat(57)}NAME\n${"a".repeat(64)}   bridge\n${"b".repeat(64)}   my_bridge\n`,
    );
    const json = formatList(rows, "json", NETWORK_TABLE, NETWORK_HEADERS)
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    assert.equal(json.length, 2);
    assert.equal(json[1].Labels, "k=v");
    assert.equal(json[0].CreatedAt, "2024-05-01 10:00:00 +0000 UTC");
    assert.deepEqual(Object.keys(json[0]), [...Object.keys(json[0])].sort());
    assert.equal(
      formatList(rows, "{{.Name}} {{.Driver}}", NETWORK_TABLE, NETWORK_HEADERS),
      "bridge bridge\nmy_bridge bridge\n",
    );
  });

  it("renders container rows as docker ps does", () => {
    const now = Date.UTC(2024, 0, 1, 12, 0, 0);
    const row = containerRow(
      {
        Id: "c".repeat(64),
        Names: ["/web"],
        Image: "",
        Command: "sh -c 'while true; do sleep 1; done'",
        Created: now / 1000 - 150,
        Ports: [
          { IP: "0.0.0.0", PrivatePort: 80, PublicPort: 8080, Type: "tcp" },
          { IP: "::", PrivatePort: 80, PublicPort: 8080, Type: "tcp" },
          { PrivatePort: 53, Type: "udp" },
        ],
        State: "running",
        Status: "Up 2 minutes",
      },
      false,
      now,
    );
    assert.equal(row.ID, "cccccccccccc");
    assert.equal(row.Command, '"sh -c \'while true; …"');
    assert.equal(row.RunningFor, "3 minutes ago");
    assert.equal(row.Ports, "53/udp, 0.0.0.0:8080->80/tcp, [::]:8080->80/tcp");
    assert.equal(row.Names, "web");
    assert.equal(row.Image, "<none>");
  });

  it("humanises durations and truncates with an ellipsis like docker", () => {
    assert.equal(humanDuration(500), "Less than a second");
    assert.equal(humanDuration(1000), "1 second");
    assert.equal(humanDuration(45_000), "45 seconds");
    assert.equal(humanDuration(60_000), "About a minute");
    assert.equal(humanDuration(3_600_000), "About an hour");
    assert.equal(humanDuration(5 * 3_600_000), "5 hours");
    assert.equal(humanDuration(3 * 86_400_000), "3 days");
    assert.equal(ellipsis("short", 20), "short");
    assert.equal(ellipsis("abcdefghij", 5), "abcd…");
    assert.equal(formatPorts(undefined), "");
  });
});
