import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { formatValue, renderTemplate, TemplateError } from "../../src/cli/template.js";

const container = {
  Id: "abc123",
  Name: "/c2",
  State: { Running: true, Pid: 42, ExitCode: 0 },
  Config: { Env: ["A=1", "B=2"], Labels: { "com.example.role": "web" } },
  NetworkSettings: {
    Networks: {
      my_bridge: { IPAddress: "172.18.0.2", Aliases: ["web", "c2"] },
      "other-net": { IPAddress: "172.19.0.3", Aliases: null },
    },
  },
};

describe("template", () => {
  it("follows field paths", () => {
    assert.equal(
      renderTemplate("{{.NetworkSettings.Networks.my_bridge.IPAddress}}", container),
      "172.18.0.2",
    );
    assert.equal(renderTemplate("{{.Name}} {{.State.Pid}}", container), "/c2 42");
  });

  it("prints <no value> for missing keys, even deep ones", () => {
    assert.equal(renderTemplate("{{.Nope}}", container), "<no value>");
    assert.equal(renderTemplate("{{.Nope.Deeper}}", container), "<no value>");
  });

  it("reaches keys with dashes and dots through index, and fields of its result", () => {
    assert.equal(renderTemplate('{{index .Config.Labels "com.example.role"}}', container), "web");
    assert.equal(
      renderTemplate('{{(index .NetworkSettings.Networks "other-net").IPAddress}}', container),
      "172.19.0.3",
    );
    assert.equal(renderTemplate("{{index .Config.Env 1}}", container), "B=2");
  });

  it("ranges over maps in key order and over arrays", () => {
    assert.equal(
      renderTemplate("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container),
      "172.18.0.2172.19.0.3",
    );
    assert.equal(
      renderTemplate(
        "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}} {{end}}",
        container,
      ),
      "my_bridge=172.18.0.2 other-net=172.19.0.3 ",
    );
    assert.equal(
      renderTemplate("{{range $i, $e := .Config.Env}}{{$i}}:{{$e}},{{end}}", container),
      "0:A=1,1:B=2,",
    );
    assert.equal(renderTemplate("{{range .Missing}}x{{else}}none{{end}}", container), "none");
  });

  it("keeps $ as the root inside range", () => {
    assert.equal(renderTemplate("{{range .Config.Env}}{{$.Id}} {{end}}", container), "abc123 abc123 ");
  });

  it("encodes json without HTML escaping", () => {
    assert.equal(renderTemplate("{{json .State}}", container), '{"Running":true,"Pid":42,"ExitCode":0}');
    assert.equal(renderTemplate("{{json .Nope}}", container), "null");
    assert.equal(renderTemplate("{{json .}}", { a: "<b>" }), '{"a":"<b>"}');
  });

  it("branches with if/else if/else on Go truthiness", () => {
    const t = "{{if .State.ExitCode}}failed{{else if .State.Running}}running{{else}}stopped{{end}}";
    assert.equal(renderTemplate(t, container), "running");
    assert.equal(renderTemplate(t, { State: { ExitCode: 2 } }), "failed");
    assert.equal(renderTemplate(t, { State: {} }), "stopped");
  });

  it("prints objects and arrays as Go prints decoded JSON", () => {
    assert.equal(renderTemplate("{{.State}}", container), "map[ExitCode:0 Pid:42 Running:true]");
    assert.equal(renderTemplate("{{.Config.Env}}", container), "[A=1 B=2]");
    assert.equal(formatValue(null), "<nil>");
    assert.equal(formatValue([1, null, { b: 2, a: "x" }]), "[1 <nil> map[a:x b:2]]");
  });

  it("supports println, pipelines, comparison and join", () => {
    assert.equal(renderTemplate("{{.Name}}{{println}}", container), "/c2\n");
    assert.equal(renderTemplate("{{.State | json}}", container), '{"Running":true,"Pid":42,"ExitCode":0}');
    assert.equal(renderTemplate('{{if eq .Name "/c2"}}yes{{end}}', container), "yes");
    assert.equal(renderTemplate('{{join .Config.Env ","}}', container), "A=1,B=2");
    assert.equal(renderTemplate("{{len .Config.Env}}", container), "2");
    assert.equal(renderTemplate('{{printf "%s=%d" .Name .State.Pid}}', container), "/c2=42");
  });

  it("trims whitespace around {{- and -}}", () => {
    assert.equal(renderTemplate("a  {{- .Name -}}  \n b", container), "a/c2b");
  });

  it("declares variables and scopes them to the block", () => {
    assert.equal(renderTemplate("{{$n := .Name}}{{with .State}}{{$n}}:{{.Pid}}{{end}}", container), "/c2:42");
  });

  it("rejects malformed templates with a TemplateError", () => {
    assert.throws(() => renderTemplate("{{.Name", container), TemplateError);
    assert.throws(() => renderTemplate("{{if .Name}}x", container), TemplateError);
    assert.throws(() => renderTemplate("{{nosuchfunc .Name}}", container), TemplateError);
    assert.throws(() => renderTemplate("{{end}}", container), TemplateError);
    // As in Go, a dash ends a field name: such keys need index.
    assert.throws(() => renderTemplate("{{.NetworkSettings.Networks.other-net}}", container), TemplateError);
    assert.throws(() => renderTemplate("{{.Name.Foo}}", container), /can't evaluate field Foo/);
  });
});
