"""The web dashboard, served by the API at `/ui`: sign-in sessions, the page shell and its assets."""
