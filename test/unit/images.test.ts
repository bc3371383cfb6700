import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidParameterError } from "../../src/errors.js";
import { parseChanges } from "../../src/images/changes.js";
import { formatReference, parseReference, repoTagReference } from "../../src/images/reference.js";

const ref = (s: string) => formatReference(parseReference(s));

describe("image references", () => {
  it("reads names in Docker's familiar form with latest as the default tag", () => {
    assert.equal(ref("busybox"), "busybox:latest");
    assert.equal(ref("busybox:1.36"), "busybox:1.36");
    assert.equal(ref("local/busybox"), "local/busybox:latest");
    assert.equal(ref("localhost/x"), "localhost/x:latest");
    assert.equal(ref("localhost:5000/team/app:v1.0"), "localhost:5000/team/app:v1.0");
    assert.equal(ref("registry.example/app"), "registry.example/app:latest");
    assert.equal(ref("a__b-c/d.e---f"), "a__b-c/d.e---f:latest");
  });

  it("treats docker.io and library/ as the default repository", () => {
    assert.equal(ref("docker.io/library/busybox"), "busybox:latest");
    assert.equal(ref("index.docker.io/library/busybox:1"), "busybox:1");
    assert.equal(ref("library/busybox"), "busybox:latest");
    assert.equal(ref("docker.io/team/app"), "team/app:latest");
  });

  it("refuses what Docker refuses, with Docker's words", () => {
    assert.throws(() => parseReference("Busybox"), /repository name \(Busybox\) must be lowercase/);
    assert.throws(() => parseReference("f".repeat(64)), /cannot specify 64-byte hexadecimal/);
    assert.throws(() => parseReference("busybox@sha256:abc"), /no digests/);
    assert.throws(() => parseReference("busy box"), InvalidParameterError);
    assert.throws(() => parseReference("-busybox"), InvalidParameterError);
    assert.throws(() => parseReference("busybox:-x"), /invalid tag/);
    assert.throws(() => parseReference(""), InvalidParameterError);
    assert.throws(() => parseReference("a//b"), InvalidParameterError);
  });

  it("takes the tag from the repo or the tag parameter, not both", () => {
    assert.deepEqual(repoTagReference("local/busybox", "v1"), { name: "local/busybox", tag: "v1" });
    assert.deepEqual(repoTagReference("local/busybox:v1"), { name: "local/busybox", tag: "v1" });
    assert.deepEqual(repoTagReference("localhost:5000/app", "v2"), { name: "localhost:5000/app", tag: "v2" });
    assert.throws(() => repoTagReference("local/busybox:v1", "v2"), /tag is given twice/);
  });
});

describe("import changes", () => {
  it("is an empty config without changes", () => {
    assert.deepEqual(parseChanges([]), { Cmd: null, Entrypoint: null, Env: null, WorkingDir: "" });
  });

  it("reads CMD and ENTRYPOINT in exec and shell form", () => {
    assert.deepEqual(parseChanges(['CMD ["sh"]']).Cmd, ["sh"]);
    assert.deepEqual(parseChanges(['cmd ["sh", "-c", "echo hi"]']).Cmd, ["sh", "-c", "echo hi"]);
    assert.deepEqual(parseChanges(["CMD echo $HOME && ls"]).Cmd, ["/bin/sh", "-c", "echo $HOME && ls"]);
    assert.deepEqual(parseChanges(["CMD [not json"]).Cmd, ["/bin/sh", "-c", "[not json"]);
    assert.deepEqual(parseChanges(['ENTRYPOINT ["/bin/busybox"]', 'CMD ["sh"]']), {
      Cmd: ["sh"],
      Entrypoint: ["/bin/busybox"],
      Env: null,
      WorkingDir: "",
    });
  });

  it("reads ENV in both forms, with quotes and earlier variables", () => {
    assert.deepEqual(parseChanges(["ENV PATH=/bin:/usr/bin"]).Env, ["PATH=/bin:/usr/bin"]);
    assert.deepEqual(parseChanges(["ENV GREETING hello  world"]).Env, ["GREETING=hello  world"]);
    assert.deepEqual(
      // biome-ignore lint/suspicious/noTemplateCurlyInString: Dockerfile variables, not a template
      parseChanges(["ENV A=1 B=\"two words\" C='$A' D=$A E=${A}x F=${NOPE:-dflt} G=${A:+set}"]).Env,
      ["A=1", "B=two words", "C=$A", "D=1", "E=1x", "F=dflt", "G=set"],
    );
    assert.deepEqual(parseChanges(["ENV A=1", "ENV PATH=/x:$PATH A=2"]).Env, ["PATH=/x:", "A=2"]);
    assert.deepEqual(parseChanges(['ENV X="a \\"q\\" b"']).Env, ['X=a "q" b']);
  });

  it("resolves WORKDIR against the previous one", () => {
    assert.equal(parseChanges(["WORKDIR /srv"]).WorkingDir, "/srv");
    assert.equal(parseChanges(["WORKDIR /srv", "WORKDIR app/../data"]).WorkingDir, "/srv/data");
    assert.equal(parseChanges(["WORKDIR tmp"]).WorkingDir, "/tmp");
    assert.equal(parseChanges(["ENV D=/opt", "WORKDIR $D/app"]).WorkingDir, "/opt/app");
  });

  it("joins lines the way a Dockerfile does", () => {
    const c = parseChanges(['# a comment\nENV A=1 \\\n  B=2\n\nCMD ["sh"]']);
    assert.deepEqual(c.Env, ["A=1", "B=2"]);
    assert.deepEqual(c.Cmd, ["sh"]);
  });

  it("names what it does not support", () => {
    assert.throws(
      () => parseChanges(["EXPOSE 80"]),
      /EXPOSE is not supported by ctnet.*CMD, ENTRYPOINT, ENV, WORKDIR/,
    );
    assert.throws(() => parseChanges(["USER nobody"]), InvalidParameterError);
    assert.throws(() => parseChanges(["FROB x"]), /FROB is not a valid change command/);
    assert.throws(() => parseChanges(["CMD"]), /CMD requires at least one argument/);
    assert.throws(() => parseChanges(["ENV A"]), /needs a value/);
    assert.throws(() => parseChanges(["ENV =x"]), /can't find =/);
    assert.throws(() => parseChanges(['ENV A="open']), /matching "/);
  });
});
