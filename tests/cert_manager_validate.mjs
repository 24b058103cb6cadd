// Validate cert-manager objects (JSON list on stdin) with the validators
// @kubernetes-models/cert-manager compiles from cert-manager's CRDs; one line per
// document: "ok NAME" or "bad NAME REASON". argv[2]: that package's directory.
import { readFileSync } from "fs";
import { pathToFileURL } from "url";
import { join } from "path";

const docs = JSON.parse(readFileSync(0, "utf8"));
for (const d of docs) {
  const [group, version] = d.apiVersion.split("/");
  const mod = await import(pathToFileURL(join(process.argv[2], group, version, `${d.kind}.js`)).href);
  try {
    new mod[d.kind](d).validate();
    console.log(`ok ${d.metadata.name}`);
  } catch (e) {
    console.log(`bad ${d.metadata.name} ${String(e.message).replace(/\n/g, " ").slice(0, 500)}`);
  }
}
