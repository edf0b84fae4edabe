"""End-to-end tests: real `dagster-webserver`, `dagster-daemon` and headless Chromium."""


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "e2e: starts real servers and a browser (about a minute); -m 'not e2e' skips"
    )
