using BenchmarkDotNet.Attributes;

using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.Tokenizers;

using Quantization.Onnx;
using Quantization.Onnx.Protos;
using Quantization.Samples;

namespace Quantization.Benchmarks;

/// <summary>
/// all-MiniLM-L6-v2 in ONNX Runtime on one sentence, one intra-op thread, at ONNX Runtime's basic and default levels,
/// with only its word-embedding table (30522 × 384) changed: float, int8 per row or int4 in groups of 32 through
/// <c>com.microsoft.GatherBlockQuantized</c>, or int8 per row through DequantizeLinear → Gather. Every other weight stays
/// float, so the differences are the embedding lookup's. <see cref="LookupOnly"/> runs the word-embedding Gather alone
/// (the sentence's 14 token ids), which shows the lookup's own cost without the encoder's noise.
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

    /// <summary>Gets or sets a value indicating whether the model is the word-embedding lookup alone rather than the whole encoder.</summary>
    [Params(false, true)]
    public bool LookupOnly { get; set; }

    [GlobalSetup(Target = nameof(FloatTable))]
    public void SetupFloatTable() => Setup(embeddings: null);

    [GlobalSetup(Target = nameof(GatherBlockQuantized))]
    public void SetupGatherBlockQuantized() => Setup(new OnnxEmbeddingQuantizationOptions { Operator = OnnxEmbeddingOperator.GatherBlockQuantized });

    [GlobalSetup(Target = nameof(GatherBlockQuantizedInt4))]
    public void SetupGatherBlockQuantizedInt4() => Setup(new OnnxEmbeddingQuantizationOptions { Scheme = QuantizationScheme.Int4PerGroup(32) });

    [GlobalSetup(Target = nameof(DequantizeLinearGather))]
    public void SetupDequantizeLinearGather() => Setup(new OnnxEmbeddingQuantizationOptions { Operator = OnnxEmbeddingOperator.DequantizeLinear });

    [Benchmark(Baseline = true)]
    public void FloatTable() => Run();

    [Benchmark]
    public void GatherBlockQuantized() => Run();

    [Benchmark]
    public void GatherBlockQuantizedInt4() => Run();

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
        if (LookupOnly)
        {
            model = Lookup(model);
            _feed = [.. _feed.Where(v => model.Proto.Graph.Input.Any(i => i.Name == v.Name))];
        }

        OnnxWeightQuantizationOptions options = new() { Embeddings = embeddings, BiasCorrection = false };
        options.OpTypes.Clear();
        OnnxWeightQuantizer.Quantize(model, options);
        using SessionOptions session = new() { IntraOpNumThreads = 1, InterOpNumThreads = 1, ExecutionMode = ExecutionMode.ORT_SEQUENTIAL, GraphOptimizationLevel = Level };
        _session = new InferenceSession(Google.Protobuf.MessageExtensions.ToByteArray(model.Proto), session);
        _outputs[0] = model.Proto.Graph.Output[0].Name;
    }

    /// <summary>The model's word-embedding Gather alone: the table, the graph input it gathers with, and its output.</summary>
    private static OnnxModel Lookup(OnnxModel encoder)
    {
        GraphProto graph = encoder.Proto.Graph;
        NodeProto gather = graph.Node.First(n => n.OpType == "Gather" && n.Input[0] == "embeddings.word_embeddings.weight");
        ModelProto lookup = new()
        {
            IrVersion = encoder.Proto.IrVersion,
            OpsetImport = { encoder.Proto.OpsetImport },
            Graph = new GraphProto
            {
                Name = "lookup",
                Node = { gather.Clone() },
                Initializer = { encoder.GetInitializer(gather.Input[0]).Clone() },
                Input = { graph.Input.Single(i => i.Name == gather.Input[1]).Clone() },
                Output = { new ValueInfoProto { Name = gather.Output[0], Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float } } } },
            },
        };
        return OnnxModel.Parse(Google.Protobuf.MessageExtensions.ToByteArray(lookup));
    }
}
