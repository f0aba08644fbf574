// Runs s3rver, the local stack's S3-compatible server, with its objects kept under a folder on disk.
//   node serve.js --directory DIR --address 127.0.0.1 --port 9000 --silent
// The package's own `bin/` is missing from the published 4.x tarball, so we call its CLI module.
'use strict';
const cli = require('@20minutes/s3rver/lib/cli.js');
cli.parseAsync(process.argv).catch((err) => {
  console.error(err);
  process.exit(1);
});
