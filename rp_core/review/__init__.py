"""`rp review`: choose, face by face on a local web page, who stays and who changes, then render.

The page reads and writes the same faces JSON as `rp detect` and renders with the same session as
`rp anonymize --faces-json` (`rp_core.api.anonymize_files`), so every decision can be rendered
again from the command line. The server is for one user on this machine: it binds to 127.0.0.1,
answers only requests that carry its random token, and serves only the given inputs and outputs.
Starlette and uvicorn are imported by the command, not by this package (`pip install 'rp-anonymize[review]'`).
"""
