import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { toServiceSpec, updateVersion } from "../../src/api/service-schemas.js";
import { parsePublish, taskRow } from "../../src/cli/service.js";
import { InvalidParameterError, NotSupportedError } from "../../src/errors.js";

/** What `docker service create --name web --replicas 2 --network mynet -p 8080:80 --publish mode=host,… -e A=B` sends. */
const DOCKER_CLI_BODY = {
  Name: "web",
  Labels: {},
  TaskTemplate: {
    ContainerSpec: {
      Image: "busybox:latest",
      Args: ["httpd", "-f", "-p", "80"],
      Env: ["A=B"],
      Init: false,
      DNSConfig: {},
    },
    Resources: { Limits: {}, Reservations: {} },
    Placement: {},
    Networks: [{ Target: "netid123" }],
    ForceUpdate: 0,
  },
  Mode: { Replicated: { Replicas: 2 } },
  EndpointSpec: {
    Mode: "vip",
    Ports: [
      { Protocol: "tcp", TargetPort: 80, PublishedPort: 8080, PublishMode: "ingress" },
      { Protocol: "udp", TargetPort: 90, PublishedPort: 9090, PublishMode: "host" },
    ],
  },
};

const unsupported = (re: RegExp) => (e: Error) => e instanceof NotSupportedError && re.test(e.message);

describe("service specs from the Docker API", () => {
  it("reads what the docker CLI sends, its zero-valued fields included", () => {
    assert.deepEqual(toServiceSpec(DOCKER_CLI_BODY), {
      name: "web",
      image: "busybox:latest",
      cmd: ["httpd", "-f", "-p", "80"],
      env: ["A=B"],
      labels: {},
      replicas: 2,
      networks: ["netid123"],
      endpointMode: "vip",
      ports: [
        { mode: "ingress", protocol: "tcp", published: 8080, target: 80 },
        { mode: "host", protocol: "udp", published: 9090, target: 90 },
      ],
    });
  });

  it("defaults to one replica, vip mode, tcp, ingress and a port the daemon picks", () => {
    const spec = toServiceSpec({
      TaskTemplate: { ContainerSpec: { Command: ["sh", "-c"], Args: ["sleep 1"] } },
      Mode: { Replicated: {} },
      EndpointSpec: { Ports: [{ TargetPort: 80 }] },
    });
    assert.equal(spec.name, "");
    assert.equal(spec.replicas, 1);
    assert.equal(spec.endpointMode, "vip");
    assert.deepEqual(spec.entrypoint, ["sh", "-c"]);
    assert.deepEqual(spec.ports, [{ mode: "ingress", protocol: "tcp", published: 0, target: 80 }]);
    assert.deepEqual(toServiceSpec({ Networks: [{ Target: "old-style" }] }).networks, ["old-style"]);
  });

  it("refuses an option it does not honour by its path, never ignoring it", () => {
    const withLimit = {
      ...DOCKER_CLI_BODY,
      TaskTemplate: { ...DOCKER_CLI_BODY.TaskTemplate, Resources: { Limits: { MemoryBytes: 104857600 } } },
    };
    assert.throws(
      () => toServiceSpec(withLimit),
      unsupported(/TaskTemplate\.Resources\.Limits\.MemoryBytes/),
    );
    assert.throws(
      () => toServiceSpec({ TaskTemplate: { Networks: [{ Target: "n", Aliases: ["x"] }] } }),
      unsupported(/TaskTemplate\.Networks\[0\]\.Aliases/),
    );
    assert.throws(
      () => toServiceSpec({ TaskTemplate: { RestartPolicy: { Condition: "none" } } }),
      unsupported(/TaskTemplate\.RestartPolicy\.Condition/),
    );
    assert.throws(() => toServiceSpec({ TaskTemplate: { ForceUpdate: 1 } }), unsupported(/ForceUpdate/));
    assert.throws(() => toServiceSpec({ Mode: { Global: {} } }), unsupported(/Global services/));
    assert.throws(
      () => toServiceSpec({ EndpointSpec: { Ports: [{ Protocol: "sctp", TargetPort: 1 }] } }),
      unsupported(/sctp/),
    );
    assert.throws(
      () => toServiceSpec({ Mode: { Replicated: { Replicas: -1 } } }),
      (e: Error) => e instanceof InvalidParameterError,
    );
  });

  it("takes the update's version from the query", () => {
    assert.equal(updateVersion("12"), 12);
    for (const bad of [null, "", "x", "-1", "1.5"])
      assert.throws(
        () => updateVersion(bad),
        (e: Error) => e instanceof InvalidParameterError,
      );
  });
});

describe("ctnet service CLI", () => {
  it("reads --publish in the short and the long form", () => {
    assert.deepEqual(parsePublish("8080:80"), {
      Protocol: "tcp",
      TargetPort: 80,
      PublishedPort: 8080,
      PublishMode: "ingress",
    });
    assert.deepEqual(parsePublish("53/udp"), {
      Protocol: "udp",
      TargetPort: 53,
      PublishedPort: 0,
      PublishMode: "ingress",
    });
    assert.deepEqual(parsePublish("mode=host,published=8081,target=80,protocol=udp"), {
      Protocol: "udp",
      TargetPort: 80,
      PublishedPort: 8081,
      PublishMode: "host",
    });
    for (const bad of ["80:", "a:b", "mode=x,target=1", "published=1", "target=70000", "target=1,colour=red"])
      assert.throws(() => parsePublish(bad), /--publish|publish mode|field key|port/);
  });

  it("prints a pending task's reason quoted and cut as docker does", () => {
    const row = taskRow(
      {
        ID: "5m5u3o7rakit9vldcdy96tsuj",
        ServiceID: "s",
        Slot: 4,
        DesiredState: "running",
        Status: {
          State: "pending",
          Timestamp: new Date(0).toISOString(),
          Err: "no suitable node (host-mode port already in use on 3 nodes)",
        },
      },
      "hm",
      false,
      5000,
    );
    assert.deepEqual(row, {
      CurrentState: "Pending 5 seconds ago",
      DesiredState: "Running",
      Error: '"no suitable node (host-mode p…"',
      ID: "5m5u3o7rakit",
      Image: "<none>",
      Name: "hm.4",
      Node: "",
      Ports: "",
    });
  });
});
