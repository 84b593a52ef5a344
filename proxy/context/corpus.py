"""A small multilingual text corpus for measuring token estimates (tests and bench only).

Hand-written sentences per language plus generated code and digit runs, deterministic, so
``conversation(lang, n_turns, seed)`` builds the same chat everywhere. Nothing here is used on
the request path.
"""

# ruff: noqa: RUF001 (multilingual text on purpose)
from __future__ import annotations

import random
from collections.abc import Mapping

SENTENCES: Mapping[str, tuple[str, ...]] = {
    "en": (
        "The quarterly report shows that revenue grew faster than expected in every region.",
        "Could you explain why the cache misses increase when the conversation gets longer?",
        "We moved the meeting to Thursday afternoon because the design review ran late.",
        "Please summarise the attached notes and list the three decisions we still need.",
        "The library keeps a small pool of connections and reuses them for every request.",
        "If the server answers with an error, the client waits a moment and tries again.",
        "Our customers mostly write short questions, but some paste entire log files.",
        "Remember to update the documentation when the configuration format changes.",
    ),
    "de": (
        "Der Bericht zeigt, dass der Umsatz im letzten Quartal deutlich gestiegen ist.",
        "Kannst du mir erklären, warum die Anfrage nach zwei Minuten abgebrochen wurde?",
        "Wir haben die Besprechung auf Donnerstagnachmittag verschoben.",
        "Bitte fasse die Notizen zusammen und nenne die offenen Entscheidungen.",
        "Die Bibliothek verwendet Verbindungen wieder, statt jedes Mal neue aufzubauen.",
    ),
    "fr": (
        "Le rapport montre que le chiffre d'affaires a augmenté plus vite que prévu.",
        "Pourriez-vous expliquer pourquoi la réponse arrive si lentement aujourd'hui ?",
        "Nous avons déplacé la réunion à jeudi après-midi à cause de la revue.",
        "Merci de résumer les notes jointes et de lister les décisions en suspens.",
        "Le serveur renvoie une erreur lorsque la requête dépasse la taille autorisée.",
    ),
    "es": (
        "El informe muestra que los ingresos crecieron más rápido de lo esperado.",
        "¿Podrías explicar por qué la conversación se vuelve más cara con el tiempo?",
        "Cambiamos la reunión al jueves por la tarde porque la revisión se retrasó.",
        "Por favor, resume las notas y enumera las decisiones que aún faltan.",
    ),
    "vi": (
        "Báo cáo cho thấy doanh thu tăng nhanh hơn dự kiến ở tất cả các khu vực.",
        "Bạn có thể giải thích tại sao yêu cầu bị lỗi sau hai phút không?",
        "Chúng tôi đã dời cuộc họp sang chiều thứ Năm vì buổi đánh giá kéo dài.",
        "Vui lòng tóm tắt các ghi chú và liệt kê những quyết định còn lại.",
    ),
    "ru": (
        "Отчёт показывает, что выручка выросла быстрее, чем ожидалось, во всех регионах.",
        "Не могли бы вы объяснить, почему запрос прервался через две минуты?",
        "Мы перенесли встречу на четверг после обеда, потому что обзор затянулся.",
        "Пожалуйста, кратко изложите заметки и перечислите оставшиеся решения.",
        "Библиотека повторно использует соединения вместо того, чтобы открывать новые.",
    ),
    "uk": (
        "Звіт показує, що виручка зросла швидше, ніж очікувалося, в усіх регіонах.",
        "Чи могли б ви пояснити, чому запит перервався через дві хвилини?",
        "Ми перенесли зустріч на четвер після обіду, бо огляд затягнувся.",
        "Будь ласка, підсумуйте нотатки та перелічіть рішення, які ще потрібні.",
    ),
    "zh": (
        "报告显示，所有地区的收入增长都快于预期。",
        "你能解释一下为什么请求在两分钟后中断了吗？",
        "因为设计评审拖延了，我们把会议改到了星期四下午。",
        "请总结附件中的笔记，并列出我们仍需做出的三个决定。",
        "这个库会保留一个小的连接池，并在每次请求时重复使用这些连接。",
        "如果服务器返回错误，客户端会等待片刻然后重试。",
    ),
    "ja": (
        "報告書によると、すべての地域で売上が予想より早く伸びています。",
        "リクエストが二分後に中断された理由を説明していただけますか。",
        "設計レビューが長引いたため、会議を木曜日の午後に変更しました。",
        "添付のメモを要約し、まだ必要な三つの決定事項を挙げてください。",
        "このライブラリは接続を使い回し、毎回新しい接続を作りません。",
    ),
    "ko": (
        "보고서에 따르면 모든 지역에서 매출이 예상보다 빠르게 증가했습니다.",
        "요청이 2분 후에 중단된 이유를 설명해 주실 수 있나요?",
        "디자인 검토가 길어져서 회의를 목요일 오후로 옮겼습니다.",
        "첨부된 메모를 요약하고 아직 남은 세 가지 결정을 나열해 주세요.",
        "이 라이브러리는 매번 새 연결을 만들지 않고 기존 연결을 재사용합니다.",
        "서버가 오류를 반환하면 클라이언트는 잠시 기다린 후 다시 시도합니다.",
    ),
    "ar": (
        "يُظهر التقرير أن الإيرادات نمت بشكل أسرع من المتوقع في جميع المناطق.",
        "هل يمكنك أن تشرح لماذا توقف الطلب بعد دقيقتين؟",
        "نقلنا الاجتماع إلى بعد ظهر يوم الخميس لأن المراجعة تأخرت.",
        "يرجى تلخيص الملاحظات المرفقة وذكر القرارات المتبقية.",
    ),
    "hi": (
        "रिपोर्ट से पता चलता है कि सभी क्षेत्रों में राजस्व उम्मीद से तेज़ी से बढ़ा।",
        "क्या आप बता सकते हैं कि अनुरोध दो मिनट बाद क्यों रुक गया?",
        "डिज़ाइन समीक्षा लंबी चलने के कारण हमने बैठक गुरुवार दोपहर कर दी।",
        "कृपया संलग्न नोट्स का सारांश दें और बाकी निर्णयों की सूची बनाएं।",
    ),
    "th": (
        "รายงานแสดงว่ารายได้เติบโตเร็วกว่าที่คาดไว้ในทุกภูมิภาค",
        "คุณช่วยอธิบายได้ไหมว่าทำไมคำขอถึงหยุดหลังจากสองนาที",
        "เราย้ายการประชุมไปเป็นบ่ายวันพฤหัสบดีเพราะการตรวจทานล่าช้า",
    ),
    "el": (
        "Η αναφορά δείχνει ότι τα έσοδα αυξήθηκαν ταχύτερα από το αναμενόμενο.",
        "Μπορείτε να εξηγήσετε γιατί το αίτημα διακόπηκε μετά από δύο λεπτά;",
        "Μεταφέραμε τη συνάντηση την Πέμπτη το απόγευμα λόγω της αναθεώρησης.",
    ),
    "he": (
        "הדוח מראה שההכנסות גדלו מהר מהצפוי בכל האזורים.",
        "תוכל להסביר למה הבקשה נקטעה אחרי שתי דקות?",
        "העברנו את הפגישה ליום חמישי אחר הצהריים כי הסקירה התארכה.",
    ),
}

_CODE = (
    "def retry(call, attempts=3):\n    for i in range(attempts):\n        try:\n"
    "            return call()\n        except TimeoutError:\n            time.sleep(2 ** i)\n",
    "const total = items.reduce((sum, item) => sum + item.price * item.qty, 0);\n",
    "SELECT user_id, COUNT(*) AS n FROM orders WHERE created_at > NOW() - INTERVAL '7 days'"
    " GROUP BY user_id ORDER BY n DESC LIMIT 20;\n",
    'if err != nil {\n\treturn fmt.Errorf("open %s: %w", path, err)\n}\n',
)

LANGUAGES = (*SENTENCES, "code", "digits")


def text(lang: str, rng: random.Random, sentences: int) -> str:
    """``sentences`` sentences (or code snippets / digit rows) of one language."""
    if lang == "code":
        return "".join(rng.choice(_CODE) for _ in range(sentences))
    if lang == "digits":
        return "\n".join(
            " ".join(str(rng.randrange(10 ** rng.randint(3, 12))) for _ in range(8))
            for _ in range(sentences)
        )
    pool = SENTENCES[lang]
    sep = "" if lang in ("zh", "ja", "th") else " "
    return sep.join(rng.choice(pool) for _ in range(sentences))


def conversation(lang: str, turns: int, seed: int = 0, system: str | None = None) -> list[dict]:
    """An OpenAI-style chat: optional system prompt, then ``turns`` user/assistant pairs and a
    final user question."""
    rng = random.Random(f"{lang}-{seed}")
    messages: list[dict] = [] if system is None else [{"role": "system", "content": system}]
    for _ in range(turns):
        messages.append({"role": "user", "content": text(lang, rng, rng.randint(1, 3))})
        messages.append({"role": "assistant", "content": text(lang, rng, rng.randint(2, 5))})
    messages.append({"role": "user", "content": text(lang, rng, 1)})
    return messages
