using Google.Protobuf;

using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Tokenizers;

using Quantization.Onnx.Protos;
using Quantization.Samples;

using Xunit.Abstractions;

using static Quantization.Onnx.Tests.TestGraphs;

namespace Quantization.Onnx.Tests;

/// <summary>
/// The int8 KV cache on the real keys and values of all-MiniLM-L6-v2 (6 layers, 12 heads of 32): attention outputs
/// against fp32 attention on the same data, and the sentence embeddings with K and V quantized inside the graph.
/// Static scales are calibrated on the first 100 sentences; everything is measured on the other 200.
/// Before issue 15 the static scheme was max-based per channel for keys and values: mean 0.999558, worst 0.946883.
/// </summary>
public class MiniLMKvCacheTests(ITestOutputHelper output)
{
    private const int Layers = 6, Heads = 12, HeadDim = 32, Hidden = Heads * HeadDim;

    private static readonly string[] Kinds = ["query", "key", "value"];

    [Fact]
    public async Task AttentionOnInt8KeysAndValues_MatchesFloatAttention()
    {
        OnnxModel model = OnnxModel.Parse(MiniLM.LoadModel());
        BertTokenizer tokenizer = MiniLM.LoadTokenizer();
        IReadOnlyList<string> sentences = MiniLM.Sentences;
        Dictionary<string, List<float[]>> calibration = await CaptureAsync(model, tokenizer, sentences.Take(100));
        Dictionary<string, List<float[]>> evaluation = await CaptureAsync(model, tokenizer, sentences.Skip(100));

        foreach ((string name, KvCacheScheme scheme, double bar) in new[]
        {
            ("dynamic per token and head", KvCacheScheme.DynamicPerTokenHead, 0.9995),
            ("KIVI, groups of 8 tokens, 8 resident", KvCacheScheme.Kivi(8, 8), 0.9995),
            ("static per channel (max)", Calibrate(model, calibration, new KvCacheCalibrationOptions()), 0.999),
        })
        {
            (double mean, double worst, double bytes) = Evaluate(model, evaluation, scheme);
            output.WriteLine(FormattableString.Invariant($"MiniLM attention on int8 K/V, {name}: cosine mean {mean:F6}, worst {worst:F6}; {bytes:F3}x the fp32 bytes per token"));
            Assert.True(mean >= bar, $"{name}: mean cosine {mean}");
        }
    }

    /// <summary>
    /// Static KV scales, each calibration method and sharing, calibrated on the first 100 sentences (half as prefill blocks,
    /// half token by token as in decoding) and measured on the other 200. The bar (issue 15): worst attention cosine
    /// >= 0.99 and mean >= 0.9997 with static per-channel keys shared per head and values per token and head.
    /// </summary>
    [Fact]
    public async Task StaticScales_EachCalibrationMethod_BeforeAndAfter()
    {
        OnnxModel model = OnnxModel.Parse(MiniLM.LoadModel());
        BertTokenizer tokenizer = MiniLM.LoadTokenizer();
        IReadOnlyList<string> sentences = MiniLM.Sentences;
        Dictionary<string, List<float[]>> calibration = await CaptureAsync(model, tokenizer, sentences.Take(100));
        Dictionary<string, List<float[]>> evaluation = await CaptureAsync(model, tokenizer, sentences.Skip(100));
        CalibrationMethod[] methods = [CalibrationMethod.MinMax, CalibrationMethod.Percentile, CalibrationMethod.Mse, CalibrationMethod.Entropy];
        List<(string Name, KvCacheCalibrationOptions Options)> configurations = [];
        foreach (KvCacheSchemeKind kind in new[] { KvCacheSchemeKind.StaticPerChannel, KvCacheSchemeKind.StaticKeysPerChannel })
        {
            foreach (KvCacheScaleSharing sharing in new[] { KvCacheScaleSharing.Channel, KvCacheScaleSharing.Head })
            {
                configurations.AddRange(methods.Select(method => (
                    FormattableString.Invariant($"{kind}, {method}, thresholds per {sharing}"),
                    new KvCacheCalibrationOptions { Method = method, Scheme = kind, KeySharing = sharing, ValueSharing = sharing })));
            }
        }

        Dictionary<string, (double Mean, double Worst)> results = [];
        foreach ((string name, KvCacheCalibrationOptions options) in configurations)
        {
            (double mean, double worst, double bytes) = Evaluate(model, evaluation, Calibrate(model, calibration, options));
            results[name] = (mean, worst);
            output.WriteLine(FormattableString.Invariant($"MiniLM attention on int8 K/V, {name}: cosine mean {mean:F6}, worst {worst:F6}; {bytes:F3}x the fp32 bytes per token"));
        }

        (double beforeMean, double beforeWorst) = results["StaticPerChannel, MinMax, thresholds per Channel"];
        (double afterMean, double afterWorst) = results["StaticKeysPerChannel, MinMax, thresholds per Head"];
        output.WriteLine(FormattableString.Invariant($"Before (static per channel, max): mean {beforeMean:F6}, worst {beforeWorst:F6}; after (static keys shared per head, values per token and head): mean {afterMean:F6}, worst {afterWorst:F6}"));
        Assert.True(afterWorst >= 0.99 && afterMean >= 0.9997, $"mean {afterMean}, worst {afterWorst}");
    }

    [Fact]
    public async Task KeysAndValuesQuantizedInTheGraph_KeepTheEmbeddings()
    {
        // Static int8 per channel (384 channels = heads x head dim) on every key and value projection, as QDQ nodes.
        byte[] original = MiniLM.LoadModel();
        OnnxModel model = OnnxModel.Parse(original);
        BertTokenizer tokenizer = MiniLM.LoadTokenizer();
        IReadOnlyList<string> sentences = MiniLM.Sentences;
        string[] projections = [.. Enumerable.Range(0, Layers).SelectMany(layer => new[] { Projection(model, layer, "key"), Projection(model, layer, "value") })];
        IReadOnlyDictionary<string, QuantizationParameters> parameters;
        using (OnnxCalibrator calibrator = new(model, projections, _ => new MinMaxObserver(QuantizationScheme.Int8PerChannel(axis: 2))))
        {
            await calibrator.RunAsync(CalibrationDataSource.FromBatches(sentences.Take(100).Select(s => MiniLM.Feed(tokenizer, s))));
            parameters = calibrator.ComputeParameters();
        }

        GraphProto graph = model.Proto.Graph;
        foreach (string name in projections)
        {
            QuantizationParameters p = parameters[name];
            Assert.Equal(Hidden, p.Count);
            graph.Initializer.Add(new TensorProto { Name = name + "_scale", DataType = (int)TensorProto.Types.DataType.Float, Dims = { Hidden }, RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(p.Scales)) });
            graph.Initializer.Add(new TensorProto { Name = name + "_zero_point", DataType = (int)TensorProto.Types.DataType.Int8, Dims = { Hidden }, RawData = ByteString.CopyFrom(new byte[Hidden]) });
            foreach (NodeProto consumer in graph.Node.Where(n => n.Input.Contains(name)).ToList())
            {
                consumer.Input[consumer.Input.IndexOf(name)] = name + "_dequantized";
            }

            int at = graph.Node.IndexOf(graph.Node.Single(n => n.Output.Contains(name))) + 1;
            graph.Node.Insert(at, Node("DequantizeLinear", name + "_dq", [name + "_quantized", name + "_scale", name + "_zero_point"], [name + "_dequantized"], Int("axis", 2)));
            graph.Node.Insert(at, Node("QuantizeLinear", name + "_q", [name, name + "_scale", name + "_zero_point"], [name + "_quantized"], Int("axis", 2)));
        }

        string[] evaluation = [.. sentences.Skip(100)];
        float[][] expected = Embed(original), actual = Embed(model.Proto.ToByteArray());
        double[] cosines = [.. expected.Select((e, i) => Cosine(e, actual[i]))];
        output.WriteLine(FormattableString.Invariant($"MiniLM embeddings with K and V int8 per channel in the graph: {cosines.Length} sentences, cosine mean {cosines.Average():F6}, worst {cosines.Min():F6}"));
        Assert.True(cosines.Average() >= 0.999 && cosines.Min() >= 0.999, $"mean {cosines.Average()}, worst {cosines.Min()}");

        float[][] Embed(byte[] bytes)
        {
            using SessionOptions options = new() { GraphOptimizationLevel = GraphOptimizationLevel.ORT_ENABLE_BASIC, IntraOpNumThreads = 1 };
            using InferenceSession session = new(bytes, options);
            return MiniLM.Embed(session, tokenizer, evaluation);
        }
    }

    /// <summary>Calibrates static scales: the first half of the sentences as prefill blocks, the second half one token at a time.</summary>
    private static KvCacheScheme Calibrate(OnnxModel model, Dictionary<string, List<float[]>> calibration, KvCacheCalibrationOptions options)
    {
        KvCacheCalibrator calibrator = new(Layers, Heads, HeadDim, options);
        int count = calibration[Projection(model, 0, "key")].Count;
        for (int s = 0; s < count; s++)
        {
            for (int layer = 0; layer < Layers; layer++)
            {
                float[] keys = calibration[Projection(model, layer, "key")][s], values = calibration[Projection(model, layer, "value")][s];
                int tokens = keys.Length / Hidden;
                if (s < count / 2)
                {
                    calibrator.Observe(layer, keys, values, tokens);
                    continue;
                }

                for (int t = 0; t < tokens; t++)
                {
                    calibrator.Observe(layer, keys.AsSpan(t * Hidden, Hidden), values.AsSpan(t * Hidden, Hidden));
                }
            }
        }

        return calibrator.CreateScheme();
    }

    /// <summary>Every query token of every evaluation sentence attends (all layers) on the int8 cache and on fp32: the cosines' mean and worst, and the bytes ratio.</summary>
    private static (double Mean, double Worst, double Bytes) Evaluate(OnnxModel model, Dictionary<string, List<float[]>> evaluation, KvCacheScheme scheme)
    {
        KvCacheOptions options = new(Layers, Heads, Heads, HeadDim, maxTokens: 512, scheme);
        using Int8KvCache cache = new(options);
        FloatKvCache reference = new(options);
        float[] expected = new float[Hidden], actual = new float[Hidden];
        List<double> cosines = [];
        for (int s = 0; s < evaluation[Projection(model, 0, "key")].Count; s++)
        {
            cache.Clear();
            reference.Clear();
            for (int layer = 0; layer < Layers; layer++)
            {
                float[] queries = evaluation[Projection(model, layer, "query")][s], keys = evaluation[Projection(model, layer, "key")][s], values = evaluation[Projection(model, layer, "value")][s];
                int tokens = keys.Length / Hidden;
                cache.Append(layer, keys, values, tokens);
                reference.Append(layer, keys, values, tokens);
                for (int t = 0; t < tokens; t++)
                {
                    ReadOnlySpan<float> query = queries.AsSpan(t * Hidden, Hidden);
                    reference.Attend(layer, query, expected);
                    cache.Attend(layer, query, actual);
                    cosines.Add(Cosine(expected, actual));
                }
            }
        }

        return (cosines.Average(), cosines.Min(), cache.BytesPerToken / reference.BytesPerToken);
    }

    /// <summary>The output of a layer's query, key or value projection (MatMul + bias Add): [1, tokens, 384], token-major as the cache takes it.</summary>
    private static string Projection(OnnxModel model, int layer, string kind) =>
        model.Proto.Graph.Node.Single(n => n.OpType == "Add" && n.Input.Contains($"encoder.layer.{layer}.attention.self.{kind}.bias")).Output[0];

    /// <summary>Every query, key and value projection of every sentence, in sentence order.</summary>
    private static async Task<Dictionary<string, List<float[]>>> CaptureAsync(OnnxModel model, BertTokenizer tokenizer, IEnumerable<string> sentences)
    {
        string[] names = [.. Enumerable.Range(0, Layers).SelectMany(layer => Kinds.Select(kind => Projection(model, layer, kind)))];
        Dictionary<string, List<float[]>> captured = names.ToDictionary(n => n, _ => new List<float[]>());
        using OnnxCalibrator capture = new(model, names, name => new Capture(captured[name]));
        await capture.RunAsync(CalibrationDataSource.FromBatches(sentences.Select(s => MiniLM.Feed(tokenizer, s))));
        return captured;
    }

    /// <summary>Keeps a copy of every tensor it is shown (a test's capture of real activations).</summary>
    private sealed class Capture(List<float[]> tensors) : IQuantizationObserver
    {
        public QuantizationScheme Scheme { get; } = QuantizationScheme.Int8PerTensor();

        public long ObservedCount => tensors.Sum(t => (long)t.Length);

        public void Observe(ReadOnlySpan<float> values, ReadOnlySpan<int> shape, string? tensorName = null) => tensors.Add(values.ToArray());

        public QuantizationParameters ComputeParameters() => throw new NotSupportedException();
    }
}
