// Validates SARIF logs against the SARIF 2.1.0 JSON schema (draft-04), as
// shipped in the @microsoft/jest-sarif npm package, with ajv.
// Usage: node tests/tools/validate_sarif.js FILE...
// Prints each schema violation and exits 1 if any file is not a valid SARIF log.
'use strict';
const fs = require('fs');
const path = require('path');
const Ajv = require('ajv');

const schemaPath = path.join(
  __dirname, '..', '..', 'node_modules', '@microsoft', 'jest-sarif', 'lib', 'schemas', 'sarif-2.1.0-rtm.5.json');
const schema = JSON.parse(fs.readFileSync(schemaPath, 'utf8'));
const ajv = new Ajv({ schemaId: 'id', meta: false, allErrors: true, jsonPointers: true });
ajv.addMetaSchema(require('ajv/lib/refs/json-schema-draft-04.json'));
const validate = ajv.compile(schema);

let failed = false;
for (const file of process.argv.slice(2)) {
  const log = JSON.parse(fs.readFileSync(file, 'utf8'));
  if (validate(log)) {
    console.log(`${file}: valid SARIF 2.1.0`);
  } else {
    failed = true;
    for (const e of validate.errors) {
      console.log(`${file}: ${e.dataPath || '/'} ${e.message}`);
    }
  }
}
process.exit(failed ? 1 : 0);
