"""What the kb benchmarks share: settings in a temp dir, the FAQ files, synthetic text, stats."""

from __future__ import annotations

import logging
import random
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path

from localmcp.shared.config import BackendSettings, KBSettings, Settings

REPO = Path(__file__).resolve().parents[1]
QUERY_SET = REPO / "bench" / "data" / "debian_faq_queries.json"
LANGS = ("en", "zh-cn")


def quiet_logging(level: int = logging.WARNING) -> None:
    """Log to stderr at ``level``: the kb logs one INFO line per document, which would cost
    the measured path time."""
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger().setLevel(level)


def bench_settings(
    tmp: Path,
    *,
    collection: str,
    roots: Sequence[Path] = (),
    embed_model: str | None = None,
    backend: BackendSettings | None = None,
    db_name: str = "bench.db",
) -> Settings:
    """Settings for a fresh Milvus Lite knowledge base under ``tmp`` (no user config read).

    Without ``backend`` no engine is configured at all (an OpenAI-compatible kind with no
    address), so nothing is ever probed or contacted."""
    return Settings(
        data_dir=tmp,
        log_level="WARNING",
        backend=backend or BackendSettings(kind="openai", base_url=None),
        kb=KBSettings(
            db_path=tmp / db_name,
            default_collection=collection,
            allowed_roots=list(roots),
            embed_model=embed_model,
        ),
    )


def faq_files(lang: str) -> list[Path]:
    """The FAQ's chapter pages in ``lang``; exits with the fetch command when not cached."""
    sys.path.insert(0, str(REPO / "tests"))
    import corpora
    import pytest

    try:
        return corpora.faq_chapters(lang)  # type: ignore[arg-type]
    except pytest.skip.Exception as exc:
        sys.exit(f"{exc.msg}")


def percentile(values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0-100) by linear interpolation."""
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[round(p) - 1]


# --- synthetic mixed Chinese / English text -------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


_ZH_WORDS = _words(
    "软件包 安装 系统 配置 文件 内核 升级 网络 服务器 用户 权限 数据库 索引 查询 备份 日志 进程 "
    "内存 磁盘 驱动 镜像 仓库 依赖 版本 发布 测试 稳定 源码 编译 构建 脚本 服务 端口 防火墙 证书 "
    "加密 密钥 签名 缓存 目录 路径 分区 挂载 引导 启动 关机 终端 命令 参数 选项 环境 变量 模块 "
    "库 接口 协议 客户端 请求 响应 超时 重试 错误 警告 调试 性能 内存泄漏 线程 并发 队列 调度 "
    "容器 虚拟机 集群 节点 副本 分片 负载 均衡 监控 告警 指标 文档 手册 教程 示例 翻译 中文 "
    "字符 编码 字体 输入法 桌面 窗口 显示 声音 打印 纸张 硬件 架构 处理器 固件 无线 网卡 蓝牙 "
    "更新 补丁 安全 漏洞 公告 维护者 开发者 社区 邮件 列表 论坛 缺陷 报告 许可证 自由 软件"
)
_ZH_GLUE = _words("的 了 和 在 是 把 被 对 从 为 将 可以 需要 应该 如何 怎样 如果 因为 所以 但是")
_EN_WORDS = _words(
    "package install system configure file kernel upgrade network server user permission "
    "database index query backup log process memory disk driver mirror repository dependency "
    "version release testing stable source compile build script service port firewall "
    "certificate encryption key signature cache directory path partition mount boot startup "
    "shutdown terminal command argument option environment variable module library interface "
    "protocol client request response timeout retry error warning debug performance thread "
    "concurrency queue scheduler container cluster node replica shard balance monitor alert "
    "metric document manual tutorial example translation charset encoding font desktop window "
    "display sound printer paper hardware architecture processor firmware wireless bluetooth "
    "update patch security advisory maintainer developer community mailing forum bug report "
    "licence free software"
)
_EN_GLUE = _words("the a of to and in is for with on that by from this can should when")
_TERMS = _words(
    "apt-get dpkg Debian Milvus BM25 systemd GRUB Python SSH TLS HTTP JSON YAML Docker GPU CUDA "
    "Linux ext4 NFS DNS IPv6 cron sudo PostgreSQL Redis nginx"
)


def _zipf_weights(rng: random.Random, words: Sequence[str]) -> list[float]:
    """Zipf weights (1 / rank) dealt to ``words`` in a random order."""
    weights = [1.0 / (rank + 1) for rank in range(len(words))]
    rng.shuffle(weights)
    return weights


class SyntheticText:
    """Deterministic mixed Chinese / English prose with Zipf-distributed words."""

    def __init__(self, seed: int = 7, pool: int = 8000) -> None:
        self.rng = random.Random(seed)
        self._zh_weights = _zipf_weights(self.rng, _ZH_WORDS)
        self._en_weights = _zipf_weights(self.rng, _EN_WORDS)
        self.sentences = [self._sentence() for _ in range(pool)]

    def _sentence(self) -> str:
        rng = self.rng
        if rng.random() < 0.55:
            words = rng.choices(_ZH_WORDS, weights=self._zh_weights, k=rng.randint(5, 12))
            out = []
            for word in words:
                out.append(word)
                if rng.random() < 0.35:
                    out.append(rng.choice(_ZH_GLUE))
                if rng.random() < 0.08:
                    out.append(f" {rng.choice(_TERMS)} ")
            return "".join(out).strip() + rng.choice("。。。？！")
        words = rng.choices(_EN_WORDS, weights=self._en_weights, k=rng.randint(7, 16))
        out = []
        for word in words:
            out.append(word)
            if rng.random() < 0.3:
                out.append(rng.choice(_EN_GLUE))
            if rng.random() < 0.08:
                out.append(rng.choice(_TERMS))
        text = " ".join(out)
        return text[0].upper() + text[1:] + "."

    def paragraph(self, sentences: int) -> str:
        """``sentences`` sentences from the pool."""
        return " ".join(self.rng.choice(self.sentences) for _ in range(sentences))

    def heading(self) -> str:
        """A short heading in either language."""
        if self.rng.random() < 0.5:
            return "".join(self.rng.choices(_ZH_WORDS, k=3))
        return " ".join(self.rng.choices(_EN_WORDS, k=3)).capitalize()

    def markdown_file(self) -> str:
        """A Markdown document: a title and 2-5 sections of 1-3 paragraphs."""
        parts = [f"# {self.heading()}"]
        for _ in range(self.rng.randint(2, 5)):
            parts.append(f"## {self.heading()}")
            for _ in range(self.rng.randint(1, 3)):
                parts.append(self.paragraph(self.rng.randint(2, 6)))
        return "\n\n".join(parts) + "\n"

    def query(self) -> str:
        """A 2-3 word query, sometimes Chinese with an English term, sometimes English."""
        rng = self.rng
        kind = rng.random()
        if kind < 0.4:
            return "".join(rng.sample(_ZH_WORDS, 2))
        if kind < 0.7:
            return f"{rng.choice(_TERMS)} {rng.choice(_ZH_WORDS)}{rng.choice(_ZH_WORDS)}"
        return " ".join(rng.sample(_EN_WORDS, 3))
