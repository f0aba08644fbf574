"""Helpers shared by the tests, imported as `tests.utils.<module>` (never by a bare module name).

    api_server          the real API in this process under uvicorn on loopback, a fake Ray launcher, test settings
    jobs                submit, poll and wait on jobs (API or store), their events; `FinishedJob`
    stack               `own_stack`: a module's own local stack; `start_ray` with a retry for busy machines
    ray_state           a stack's Ray actors, held resources and Ray Jobs, asked from outside this process
    browser             headless Chromium (Debian's) driven by Playwright
    postgres            a throwaway PostgreSQL server
    schema              `migrated(url)`: a new SQLite store at the schema's head, copied instead of migrated
    recording_launcher  the API as a subprocess with a launcher that records submissions
    summary             the pytest plugin behind build/test-summary.* and README.md's test figures

Writing an end-to-end test that adds seconds, not minutes
---------------------------------------------------------
Starting a stack costs tens of seconds and every training job a minute or more on two cores, so a new e2e test
reuses what the session already has. The fixtures (tests/conftest.py), from cheapest to dearest:

    stack          session: the shared stack's S3 server only (no Ray)
    ray_stack      session: the same stack with its Ray head (2 CPUs)
    api_stack      session: the same stack with its API running too: the `LocalStack` (URLs, `s3_client()`,
                   `api_headers()`, `database_url`, `env()`)
    stack_api      session: an `httpx.Client` on that API carrying the stack's admin key
    finished_job   session: one finished default job (the demo's: sweep, head, unfrozen DDP on 2 workers,
                   evaluation, a deployed model), as a `FinishedJob` (`.job`, `.events`, `.id`, `.model_id`)

1. A test that only reads a trained, deployed model or a finished job (its report, its artifacts, predictions,
   exports, batch predictions, a console page) asks for `finished_job` and adds no job at all:

        def test_the_console_lists_the_job(finished_job: FinishedJob, stack_api: httpx.Client) -> None:
            assert finished_job.id in stack_api.get("/console").text

2. A test that needs a job of its own submits it through `stack_api` and waits on signals, never sleeps:
   `jobs.submit`, `jobs.wait_job` (a status or phase), `jobs.wait_event` / `jobs.wait_phase` (on the store,
   `jobs.store_of(api_stack.database_url)`), `jobs.finish` (the job and its events). Keep it small
   (32-64 px, a dozen images a class, `num_workers: 1` unless DDP is the point, `deploy: false` unless a model
   is), and when several tests read one job, submit it once in a module-scoped fixture and let each test assert
   its part. Jobs that do not depend on each other are submitted together, then waited on.
3. Every job a module submits has ended before its last test returns, and a module may restart the shared API
   but leaves it running: the next module finds the stack as the session made it.
4. Only a module that kills or reconfigures the stack's processes (the S3 server, Ray, the API's settings) runs
   its own, with `stack.own_stack(tmp_path_factory.mktemp(...), env={...})` in a module-scoped fixture.

Whatever asks for `ray_stack`, `api_stack`, `stack_api` or `finished_job` is marked `e2e` by tests/conftest.py,
so `scripts/test --quick` (`-m "not e2e and not slow"`) leaves it out; a module with its own stack marks
itself (`pytestmark = pytest.mark.e2e`).
"""
