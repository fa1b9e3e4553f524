using BenchmarkDotNet.Attributes;

using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Tokenizers;

using Quantization.Onnx;
using Quantization.Samples;

namespace Quantization.Benchmarks;

/// <summary>
/// all-MiniLM-L6-v2 in ONNX Runtime on one sentence, one intra-op thread, at ONNX Runtime's basic and default levels,
/// with only its word-embedding table (30522 × 384) changed: float, int8 per row through
/// <c>com.microsoft.GatherBlockQuantized</c>, or int8 per row through DequantizeLinear → Gather. Every other weight stays
/// float, so the differences are the embedding lookup's.
/// </summary>
[Config(typeof(KernelBenchmarkConfig))]
public class MiniLMEmbeddingBenchmarks : IDisposable
{
    private InferenceSession? _session;
    private IReadOnlyCollection<NamedOnnxValue>? _feed;
    private readonly string[] _outputs = ["last_hidden_state"];

    /// <summary>Gets or sets ONNX Runtime's optimisation level.</summary>
    [Params(GraphOptimizationLevel.ORT_ENABLE_BASIC, GraphOptimizationLevel.ORT_ENABLE_ALL)]
    public GraphOptimizationLevel Level { get; set; }

    [GlobalSetup(Target = nameof(FloatTable))]
    public void SetupFloatTable() => Setup(embeddings: null);

    [GlobalSetup(Target = nameof(GatherBlockQuantized))]
    public void SetupGatherBlockQuantized() => Setup(new OnnxEmbeddingQuantizationOptions { Operator = OnnxEmbeddingOperator.GatherBlockQuantized });

    [GlobalSetup(Target = nameof(DequantizeLinearGather))]
    public void SetupDequantizeLinearGather() => Setup(new OnnxEmbeddingQuantizationOptions { Operator = OnnxEmbeddingOperator.DequantizeLinear });

    [Benchmark(Baseline = true)]
    public void FloatTable() => Run();

    [Benchmark]
    public void GatherBlockQuantized() => Run();

    [Benchmark]
    public void DequantizeLinearGather() => Run();

    [GlobalCleanup]
    public void Dispose()
    {
        _session?.Dispose();
        _session = null;
        GC.SuppressFinalize(this);
    }

    private void Run()
    {
        using IDisposableReadOnlyCollection<DisposableNamedOnnxValue> result = _session!.Run(_feed!, _outputs);
    }

    private void Setup(OnnxEmbeddingQuantizationOptions? embeddings)
    {
        BertTokenizer tokenizer = MiniLM.LoadTokenizer();
        _feed = MiniLM.Feed(tokenizer, MiniLM.Sentences[150]);
        OnnxModel model = OnnxModel.Parse(MiniLM.LoadModel());
        OnnxWeightQuantizationOptions options = new() { Embeddings = embeddings, BiasCorrection = false };
        options.OpTypes.Clear();
        OnnxWeightQuantizer.Quantize(model, options);
        using SessionOptions session = new() { IntraOpNumThreads = 1, InterOpNumThreads = 1, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL, GraphOptimizationLevel = Level };
        _session = new InferenceSession(Google.Protobuf.MessageExtensions.ToByteArray(model.Proto), session);
    }
}
