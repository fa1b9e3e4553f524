using Microsoft.ML.OnnxRuntime;

using Quantization.Onnx.Protos;

namespace Quantization.Onnx;

/// <summary>
/// ONNX Runtime sessions of models edited in memory: a model whose tensors live in external data files is handed to
/// ONNX Runtime as bytes, so ONNX Runtime is told the directory its data-file locations are relative to.
/// </summary>
internal static class OrtSessions
{
    /// <summary>ONNX Runtime's session option (onnxruntime_session_options_config_keys.h) for the directory of external data when a model is loaded from bytes.</summary>
    internal const string ExternalDataFolderKey = "session.model_external_initializers_file_folder_path";

    /// <summary>Creates a session of a serialized (edited) copy of <paramref name="model"/>.</summary>
    /// <param name="model">The model the bytes were made from: its <see cref="OnnxModel.ExternalDataDirectory"/> locates external data.</param>
    /// <param name="bytes">The serialized model to run.</param>
    /// <param name="options">The caller's options, or <see langword="null"/> for ONNX Runtime's defaults.</param>
    /// <returns>The session.</returns>
    /// <exception cref="InvalidOperationException">The model stores tensors externally but was parsed without a directory to find them in.</exception>
    /// <remarks>
    /// When the model stores tensors externally, the external-data directory is set on <paramref name="options"/> (ONNX
    /// Runtime's options cannot be copied); without options, on options made and disposed here.
    /// </remarks>
    public static InferenceSession Create(OnnxModel model, byte[] bytes, SessionOptions? options)
    {
        if (!HasExternalData(model.Proto.Graph))
        {
            return options is null ? new InferenceSession(bytes) : new InferenceSession(bytes, options);
        }

        string directory = model.ExternalDataDirectory
            ?? throw new InvalidOperationException("The model stores tensors in external data files but was parsed without the directory they are in; load it with OnnxModel.Load, or pass the directory to OnnxModel.Parse.");
        if (options is not null)
        {
            options.AddSessionConfigEntry(ExternalDataFolderKey, directory);
            return new InferenceSession(bytes, options);
        }

        using SessionOptions own = new();
        own.AddSessionConfigEntry(ExternalDataFolderKey, directory);
        return new InferenceSession(bytes, own);
    }

    /// <summary>Whether an initializer or a Constant-node value, in the graph or a subgraph, is stored in an external file.</summary>
    private static bool HasExternalData(GraphProto graph) =>
        graph.Initializer.Any(IsExternal)
        || graph.Node.SelectMany(n => n.Attribute).Any(a => (a.T is not null && IsExternal(a.T)) || a.Tensors.Any(IsExternal) || (a.G is not null && HasExternalData(a.G)) || a.Graphs.Any(HasExternalData));

    private static bool IsExternal(TensorProto tensor) => tensor.DataLocation == TensorProto.Types.DataLocation.External;
}
