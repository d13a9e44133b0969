import deployhq_lite as dhq
from deployhq_lite.repobuilder import Executable, Symlink
from deployhq_lite.testing.plugin import Site


def test_deploy_then_rollback_restores_first_revision(site: Site) -> None:
    first = site.repo.commit({"a.txt": "one", "bin/run": Executable("x"), "l": Symlink("a.txt")})
    site.repo.commit({"a.txt": "two", "bin/run": None, "l": "file now", "new/b": "b"})
    d1 = dhq.deploy("website", "production", revision=first, config=site.config)
    before = site.files()
    dhq.deploy("website", "production", config=site.config)
    assert site.files() != before
    back = dhq.rollback("website", d1.identifier, config=site.config)
    assert back.status is dhq.DeploymentStatus.COMPLETED
    assert site.files() == before == {"a.txt": b"one", "bin/run*": b"x", "l": "-> a.txt"}
