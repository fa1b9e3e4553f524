using System.Diagnostics;
using System.Globalization;
using System.Runtime;

using Quantization;

namespace Quantization.Samples;

/// <summary>
/// The sample's driver: builds the decoder once per linear mode, then for each KV cache and thread count prefills a
/// prompt (one block) and decodes greedily, and prints a table of speed and memory. The test project runs it too.
/// </summary>
public static class DecodeBenchmark
{
    private const string Usage = """
        Usage: LlamaDecode [--checkpoint PATH | --synthetic tinyllama-1.1b|toy] [--layers N] [--prompt N] [--generate N]
                           [--linears fp32,w8a16,w8a8,w4a16,w4a16/w4a8] [--kv fp32,int8] [--threads 1,2] [--profile yes]
        """;

    /// <summary>Runs the sample.</summary>
    /// <param name="args">The command line.</param>
    /// <param name="output">Where the table goes.</param>
    /// <returns>The exit code: 0, or 2 for a bad command line.</returns>
    public static int Run(string[] args, TextWriter output)
    {
        ArgumentNullException.ThrowIfNull(args);
        ArgumentNullException.ThrowIfNull(output);
        Dictionary<string, string> options = new(StringComparer.Ordinal);
        for (int i = 0; i < args.Length; i++)
        {
            if (!args[i].StartsWith("--", StringComparison.Ordinal) || i + 1 == args.Length)
            {
                output.WriteLine(Usage);
                return 2;
            }

            options[args[i][2..]] = args[++i];
        }

        string Option(string key, string fallback) => options.GetValueOrDefault(key, fallback);
        int Int(string key, int fallback) => int.Parse(Option(key, fallback.ToString(CultureInfo.InvariantCulture)), CultureInfo.InvariantCulture);
        string[] List(string key, string fallback) => Option(key, fallback).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

        using LlamaWeights weights = options.TryGetValue("checkpoint", out string? path)
            ? new CheckpointWeights(path)
            : new SyntheticWeights(Option("synthetic", "tinyllama-1.1b") switch
            {
                "tinyllama-1.1b" => LlamaConfig.TinyLlama,
                "toy" => LlamaConfig.Toy,
                string other => throw new ArgumentException($"Unknown synthetic model '{other}': tinyllama-1.1b or toy."),
            });
        LlamaConfig config = weights.Config with { Layers = Math.Min(weights.Config.Layers, Int("layers", weights.Config.Layers)) };
        LlamaWeights source = config == weights.Config ? weights : new LayerSubset(weights, config);
        int prompt = Int("prompt", 128), generate = Int("generate", 32);
        string defaultLinears = weights is CheckpointWeights { Scheme: QuantizationScheme s }
            ? (s.Type.GetBitWidth() == 4 ? "w4a16" : "w8a16,w8a8")
            : "fp32,w8a16,w8a8,w4a16,w4a16/w4a8";
        string[] linears = List("linears", defaultLinears);
        string[] caches = List("kv", "fp32,int8");
        int[] threads = [.. List("threads", "1,2").Select(t => int.Parse(t, CultureInfo.InvariantCulture))];

        output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"Llama decoder: {config.Layers} layers, hidden {config.HiddenSize}, FFN {config.IntermediateSize}, {config.Heads} heads / {config.KvHeads} KV heads, vocabulary {config.VocabSize}; prompt {prompt} tokens, then {generate} generated; SIMD tier {QuantizationPrimitives.ActiveSimdTier}"));
        output.WriteLine();
        output.WriteLine("linears      KV    threads  prefill tok/s  decode tok/s  resident MB  weights MB  KV cache MB");
        List<Row> rows = [];
        foreach (string linear in linears.Select(l => l.ToLowerInvariant()))
        {
            // "decode/prefill": one token runs in the first mode, blocks (the prompt) in the second.
            QuantizedLinearMode?[] modes = [.. linear.Split('/').Select(m => m == "fp32" ? (QuantizedLinearMode?)null : Enum.Parse<QuantizedLinearMode>(m, ignoreCase: true))];
            LlamaModel model = LlamaWeights.Build(source, modes[0], modes.Length > 1 ? modes[1] : null);
            ReleaseFreeMemory(); // the float weights read to build the model, and the previous model
            foreach (string cache in caches)
            {
                foreach (int t in threads)
                {
                    model.Threads = t;
                    Row row = Measure(model, linear, cache, t, prompt, generate, Option("profile", "no") == "yes" ? output : null);
                    rows.Add(row);
                    output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{row.Linears,-12} {row.Kv,-5} {row.Threads,7} {row.PrefillPerSecond,14:F1} {row.DecodePerSecond,13:F2} {row.ResidentBytes / 1e6,12:F0} {row.WeightBytes / 1e6,11:F1} {row.KvBytes / 1e6,12:F2}"));
                }
            }
        }

        if (rows.Find(r => r is { Linears: "fp32", Kv: "fp32", Threads: 1 }) is Row fp32 && rows.Find(r => r is { Linears: "w8a8", Kv: "int8", Threads: 1 }) is Row int8)
        {
            output.WriteLine();
            output.WriteLine(string.Create(CultureInfo.InvariantCulture, $"W8A8 + int8 KV vs fp32 + fp32 KV, one thread: decode {int8.DecodePerSecond / fp32.DecodePerSecond:F2}x, prefill {int8.PrefillPerSecond / fp32.PrefillPerSecond:F2}x, weights + KV memory {(double)(int8.WeightBytes + int8.KvBytes) / (fp32.WeightBytes + fp32.KvBytes):F3}x"));
        }

        return 0;
    }

    /// <summary>Collects garbage and returns the free memory to the system, so that the resident size is the model's.</summary>
    private static void ReleaseFreeMemory()
    {
        GCSettings.LargeObjectHeapCompactionMode = GCLargeObjectHeapCompactionMode.CompactOnce;
        GC.Collect(2, GCCollectionMode.Aggressive, blocking: true, compacting: true);
    }

    /// <summary>Prefills a prompt and decodes greedily on a fresh cache; a short warm-up first.</summary>
    private static Row Measure(LlamaModel model, string linears, string kv, int threads, int prompt, int generate, TextWriter? profileOutput)
    {
        DecodeProfile? profile = profileOutput is null ? null : new DecodeProfile();
        LlamaConfig c = model.Config;
        float[] logits = new float[c.VocabSize];
        int[] tokens = [.. Enumerable.Range(0, prompt).Select(i => (int)((i * 7919L + 13) % c.VocabSize))];
        using (DecodeCache warm = new(c, 8, kv == "int8"))
        {
            model.Forward(tokens.AsSpan(0, Math.Min(4, prompt)), warm, logits);
            model.Forward([1], warm, logits);
        }

        using DecodeCache cache = new(c, prompt + generate, kv == "int8");
        model.Profile = profile;
        profile?.Reset();
        Stopwatch prefill = Stopwatch.StartNew();
        model.Forward(tokens, cache, logits);
        prefill.Stop();
        profile?.Write(profileOutput!, $"{linears} + {kv} KV, {threads} thread(s): prefill time by part");
        profile?.Reset();
        Stopwatch decode = Stopwatch.StartNew();
        for (int i = 0; i < generate; i++)
        {
            int next = System.Numerics.Tensors.TensorPrimitives.IndexOfMax(logits);
            model.Forward([next], cache, logits);
        }

        decode.Stop();
        profile?.Write(profileOutput!, $"{linears} + {kv} KV, {threads} thread(s): decode time by part");
        model.Profile = null;
        using Process process = Process.GetCurrentProcess();
        return new Row(linears, kv, threads, prompt / prefill.Elapsed.TotalSeconds, generate / decode.Elapsed.TotalSeconds, process.WorkingSet64, model.WeightBytes, cache.Bytes);
    }

    private sealed record Row(string Linears, string Kv, int Threads, double PrefillPerSecond, double DecodePerSecond, long ResidentBytes, long WeightBytes, long KvBytes);

    /// <summary>The first layers of a model (<c>--layers N</c>).</summary>
    private sealed class LayerSubset(LlamaWeights inner, LlamaConfig config) : LlamaWeights
    {
        public override LlamaConfig Config => config;

        public override bool Has(string name) => inner.Has(name);

        public override float[] ReadFloat(string name, int rows, int columns) => inner.ReadFloat(name, rows, columns);

        public override QuantizedTensor? ReadQuantized(string name) => inner.ReadQuantized(name);
    }
}
