// TorchServe's batching, without the wait for company: a Java agent the launcher hands TorchServe's
// frontend (vmargs=-javaagent:build/batch-fill-agent.jar) when batch_fill is "queued".
//
// Why an agent: TorchServe 0.12 (the last release; archived upstream) fills every batch in
// Model.pollBatch by polling its job queue with the model's maxBatchDelay, so a lone request always
// waits the whole delay. The delay is a whole number of milliseconds and 0 means "unset" (a lone
// request then waited about 115 ms), so 1 ms was the floor, and nothing in TorchServe's config or
// plug-ins changes that loop. This agent rewrites that one call when the class loads: a batch then
// takes the first request as before (a worker blocks for it), then only the requests already queued,
// up to batchSize, and goes at once. A busy server still fills its batches: requests queue up while
// the workers compute. Everything else in TorchServe is left as it is.
//
// The rewrite uses the ASM copy inside the JDK (java.base's jdk.internal.org.objectweb.asm; the agent
// opens it to itself), so the agent needs no library. It checks the method's shape first: on any
// other TorchServe it stops the server with a message rather than batch differently from what the
// settings say.
//
// `java -javaagent:batch-fill-agent.jar -cp batch-fill-agent.jar:<model-server.jar> gruencoder.torchserve.BatchFillAgent`
// loads TorchServe's Model class and exits 0 when the rewrite applied (the tests run it).
package gruencoder.torchserve;

import java.lang.instrument.ClassFileTransformer;
import java.lang.instrument.Instrumentation;
import java.security.ProtectionDomain;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.LinkedBlockingDeque;
import java.util.concurrent.TimeUnit;
import jdk.internal.org.objectweb.asm.ClassReader;
import jdk.internal.org.objectweb.asm.ClassVisitor;
import jdk.internal.org.objectweb.asm.ClassWriter;
import jdk.internal.org.objectweb.asm.MethodVisitor;
import jdk.internal.org.objectweb.asm.Opcodes;

public final class BatchFillAgent {
    static final String MODEL = "org/pytorch/serve/wlm/Model";
    static final String METHOD = "pollBatch";
    static final String DEQUE = "java/util/concurrent/LinkedBlockingDeque";
    static final String TIMED_POLL = "(JLjava/util/concurrent/TimeUnit;)Ljava/lang/Object;";
    // In TorchServe 0.12's pollBatch the timed polls are: the worker's own queue, the first job (waits
    // for ever), then the loop that fills the batch (waits maxBatchDelay). Only the last is replaced.
    static final int TIMED_POLLS = 3;
    static final int FILL_POLL = 3;
    static final String LOG = "gru-encoder batch fill: ";

    static volatile boolean applied;

    private BatchFillAgent() {}

    public static void premain(String args, Instrumentation inst) {
        Module javaBase = Object.class.getModule();
        inst.redefineModule(javaBase, Set.of(), Map.of("jdk.internal.org.objectweb.asm", Set.of(BatchFillAgent.class.getModule())),
                Map.of(), Set.of(), Map.of());
        inst.addTransformer(new Transformer());
    }

    /** What pollBatch calls instead of queue.poll(maxDelay, unit) while it fills a batch: take a job
     *  that is already queued, or none (the batch then goes as it is). */
    public static Object queued(LinkedBlockingDeque<?> queue, long timeout, TimeUnit unit) {
        return queue.poll();
    }

    /** Loads TorchServe's Model class (it must be on the class path) and exits 0 if the rewrite applied. */
    public static void main(String[] args) throws ClassNotFoundException {
        Class.forName(MODEL.replace('/', '.'), false, BatchFillAgent.class.getClassLoader());
        System.out.println(LOG + (applied ? "applied" : "not applied (run with -javaagent)"));
        System.exit(applied ? 0 : 1);
    }

    static final class Transformer implements ClassFileTransformer {
        @Override
        public byte[] transform(ClassLoader loader, String name, Class<?> redefined, ProtectionDomain domain, byte[] bytes) {
            if (!MODEL.equals(name)) {
                return null;
            }
            try {
                int[] polls = {0};
                ClassReader reader = new ClassReader(bytes);
                // Same stack effect in, same out: the frames and maximum stack stay as they were.
                ClassWriter writer = new ClassWriter(reader, 0);
                reader.accept(new ClassVisitor(Opcodes.ASM7, writer) {
                    @Override
                    public MethodVisitor visitMethod(int access, String method, String desc, String sig, String[] exceptions) {
                        MethodVisitor next = super.visitMethod(access, method, desc, sig, exceptions);
                        return !METHOD.equals(method) ? next : new MethodVisitor(Opcodes.ASM7, next) {
                            @Override
                            public void visitMethodInsn(int op, String owner, String callee, String calleeDesc, boolean itf) {
                                if (op == Opcodes.INVOKEVIRTUAL && DEQUE.equals(owner) && "poll".equals(callee)
                                        && TIMED_POLL.equals(calleeDesc) && ++polls[0] == FILL_POLL) {
                                    super.visitMethodInsn(Opcodes.INVOKESTATIC, "gruencoder/torchserve/BatchFillAgent", "queued",
                                            "(L" + DEQUE + ";JLjava/util/concurrent/TimeUnit;)Ljava/lang/Object;", false);
                                    return;
                                }
                                super.visitMethodInsn(op, owner, callee, calleeDesc, itf);
                            }
                        };
                    }
                }, 0);
                if (polls[0] != TIMED_POLLS) {
                    throw new IllegalStateException("Model." + METHOD + " has " + polls[0] + " timed polls, TorchServe 0.12's has " + TIMED_POLLS);
                }
                applied = true;
                System.err.println(LOG + "queued (a batch takes the requests already waiting, up to batchSize, and goes at once)");
                return writer.toByteArray();
            } catch (Throwable e) {
                // A transformer's exception is swallowed by the JVM and the class loads unchanged: stop instead.
                System.err.println(LOG + "cannot patch this TorchServe (" + e + "); install torchserve==0.12.0, or serve with batch_fill=wait");
                System.err.flush();
                Runtime.getRuntime().halt(78);
                return null;
            }
        }
    }
}
