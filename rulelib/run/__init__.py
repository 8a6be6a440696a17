"""A run: its settings (resolved once), its folder and the stages that fill it.

    profiles    smoke / quick / paper: epochs, network, sampler, sample counts per task, as data
    folder      RunSettings (resolved once per command, passed to every stage), profile.json,
                timings.json, samples made with other settings set aside, stale temporaries
    lock        one writer per task folder (lock.json: pid, host, command; stale locks detected)
    images      images made elsewhere (npz, npy, PNG folders) read and checked, files named
    stages      train -> sample -> evaluate -> sweep -> mitigation, and `reproduce`
    mitigate    the mitigation's one-step commands on a run (`filter`, `guide`)

Imports go one way: profiles <- folder <- lock <- stages, mitigate; rulelib.cli sits on top.
"""
